//! What a sandbox costs in memory: the processes that belong to it (a root process and all its
//! descendants) and the sum of their proportional set sizes, read from /proc.

use std::collections::HashMap;

/// Every process's id and owner.
fn all() -> Vec<(i32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            Some((
                pid,
                std::os::unix::fs::MetadataExt::uid(&e.metadata().ok()?),
            ))
        })
        .collect()
}

/// Every process's parent, from /proc/*/stat.
fn parents() -> HashMap<i32, i32> {
    all()
        .into_iter()
        .filter_map(|(pid, _)| Some((pid, stat_ppid(pid)?)))
        .collect()
}

/// The parent of `pid`, from the field after the command name (which may hold spaces and
/// parentheses, so the last ')' ends it).
fn stat_ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `root` and all its descendants that are alive now.
pub fn tree(root: i32) -> Vec<i32> {
    let parents = parents();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, &ppid)| ppid == p)
                .map(|(&pid, _)| pid),
        );
        i += 1;
    }
    found.retain(|&pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
    found
}

/// The proportional set size of `pid` in KiB (None when it cannot be read: gone, or not ours).
pub fn pss_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    field_kib(&text, "Pss:")
}

/// The sum of the PSS of `pids`, in KiB, and how many of them could not be read.
pub fn pss_sum(pids: &[i32]) -> (u64, usize) {
    let mut sum = 0;
    let mut unreadable = 0;
    for &pid in pids {
        match pss_kib(pid) {
            Some(k) => sum += k,
            None => unreadable += 1,
        }
    }
    (sum, unreadable)
}

/// The resident size, in KiB, of `pid`'s private anonymous mappings of exactly `size_kib`:
/// for a VMM, the guest memory the guest has touched.
pub fn mapping_rss_kib(pid: i32, size_kib: u64) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut total = None;
    let mut in_match = false;
    for line in text.lines() {
        if line.starts_with("Size:") {
            in_match = field_kib(line, "Size:") == Some(size_kib);
        } else if in_match && line.starts_with("Rss:") {
            *total.get_or_insert(0) += field_kib(line, "Rss:").unwrap_or(0);
            in_match = false;
        }
    }
    total
}

fn field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Processes of this user whose environment holds `var` (e.g. `NAME=VALUE`): how the bench
/// finds helpers a peer left behind under the configuration the bench gave it.
pub fn with_env(var: &str) -> Vec<i32> {
    let me = nix::unistd::getuid().as_raw();
    let needle = var.as_bytes();
    all()
        .into_iter()
        .filter(|&(pid, owner)| {
            owner == me
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle))
        })
        .map(|(pid, _)| pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_in_its_parents_tree_and_costs_memory() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let pids = tree(me);
        assert!(pids.contains(&me));
        assert!(pids.contains(&(child.id() as i32)), "{pids:?}");
        let (sum, unreadable) = pss_sum(&pids);
        assert_eq!(unreadable, 0);
        assert!(sum > 0);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_touched_mapping_shows_its_resident_size() {
        // 9 MiB (a size nothing else here maps), half of it written. It sits between two
        // inaccessible pages, so the kernel cannot merge it with a neighbouring mapping of
        // another test's thread (which would change its size).
        let (size, page) = (9 << 20, 4096);
        // SAFETY: a fresh private anonymous mapping; only its middle is made writable and
        // written, within its bounds; unmapped below.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                size + 2 * page,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED);
            let p = (base as *mut u8).add(page);
            assert_eq!(
                libc::mprotect(p.cast(), size, libc::PROT_READ | libc::PROT_WRITE),
                0
            );
            std::ptr::write_bytes(p, 1, size / 2);
            let rss = mapping_rss_kib(std::process::id() as i32, (size / 1024) as u64);
            libc::munmap(base, size + 2 * page);
            let rss = rss.expect("the mapping");
            assert!((4608..=9216).contains(&rss), "{rss}");
        }
    }
}
