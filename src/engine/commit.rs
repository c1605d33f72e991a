//! `berth commit`: a container's writable layer as a new image layer on top of its image,
//! with the container's command, environment and working directory as the new config
//! (as Docker does), `--change` instructions applied on top.

use std::io::{BufReader, Read, Write};

use flate2::write::GzEncoder;
use oci_spec::image::{HistoryBuilder, ImageConfiguration};
use sha2::{Digest as _, Sha256};

use berth_agent::protocol::Builtin;

use super::EngineError;
use crate::clock;
use crate::image::NewLayer;
use crate::state::ContainerRecord;

/// What `berth commit` asks for.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `-m`: the history comment.
    pub message: Option<String>,
    /// `-a`.
    pub author: Option<String>,
    /// `-c`: Dockerfile instructions (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL).
    pub changes: Vec<String>,
}

/// Counts what goes through it and hashes it.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    count: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `["a", "b"]` or a shell form (`echo hi` -> `/bin/sh -c "echo hi"`).
fn command_value(v: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(v.trim()) {
        Ok(list) => list,
        Err(_) => vec!["/bin/sh".into(), "-c".into(), v.trim().to_string()],
    }
}

/// Applies one `--change` instruction to `cfg`.
fn apply_change(cfg: &mut oci_spec::image::Config, change: &str) -> Result<(), EngineError> {
    let (verb, rest) = change
        .trim()
        .split_once(char::is_whitespace)
        .unwrap_or((change, ""));
    let rest = rest.trim();
    match verb.to_ascii_uppercase().as_str() {
        "CMD" => {
            cfg.set_cmd(Some(command_value(rest)));
        }
        "ENTRYPOINT" => {
            cfg.set_entrypoint(Some(command_value(rest)));
        }
        "WORKDIR" => {
            cfg.set_working_dir(Some(rest.to_string()));
        }
        "USER" => {
            cfg.set_user(Some(rest.to_string()));
        }
        "ENV" => {
            let kv = match rest.split_once('=') {
                Some(_) => rest.to_string(),
                None => match rest.split_once(char::is_whitespace) {
                    Some((k, v)) => format!("{k}={}", v.trim()),
                    None => return Err(EngineError::Usage(format!("invalid --change {change:?}: ENV KEY=VALUE"))),
                },
            };
            let env = crate::spec::merge_env(&cfg.env().clone().unwrap_or_default(), &[kv]);
            cfg.set_env(Some(env));
        }
        "LABEL" => {
            let (k, v) = rest.split_once('=').ok_or_else(|| {
                EngineError::Usage(format!("invalid --change {change:?}: LABEL KEY=VALUE"))
            })?;
            let mut labels = cfg.labels().clone().unwrap_or_default();
            labels.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
            cfg.set_labels(Some(labels));
        }
        other => {
            return Err(EngineError::Usage(format!(
                "unsupported --change instruction {other}: berth applies CMD, ENTRYPOINT, ENV, WORKDIR, USER and LABEL"
            )))
        }
    }
    Ok(())
}

impl super::Engine {
    /// `berth commit CONTAINER [IMAGE]`: returns the new image's id.
    pub fn commit(
        &self,
        key: &str,
        name: Option<&str>,
        opts: &CommitOptions,
    ) -> Result<String, EngineError> {
        let rec = self.container(key)?;
        let parent = self.images.resolve(&rec.image_id).map_err(|e| {
            EngineError::Usage(format!(
                "the image of container {} ({}) is gone ({e}); it cannot be committed",
                rec.name, rec.image
            ))
        })?;
        let scratch = self.images.scratch_dir();
        let stem = format!("commit-{}-{}", std::process::id(), &rec.id[..12]);
        let tar_path = scratch.join(format!("{stem}.tar"));
        let gz_path = scratch.join(format!("{stem}.tar.gz"));
        let cleanup = || {
            let _ = std::fs::remove_file(&tar_path);
        };
        let written = if rec.isolation == crate::state::Isolation::Vm {
            self.vm_layer(&rec, &tar_path)
        } else {
            // The copy driver's changes are what differs from the image's layers.
            // Owners are read as the container sees them (its --userns map).
            self.ids_for(rec.userns)
                .and_then(|ids| {
                    let lowers = self.layers_for(rec.userns).ensure(&parent.layers, &ids)?;
                    Ok((ids, lowers))
                })
                .and_then(|(ids, lowers)| {
                    crate::rootfs::write_diff(&rec.driver, &rec.writable, &lowers, &tar_path, &ids)
                        .map_err(EngineError::from)
                })
        };
        if let Err(e) = written {
            cleanup();
            return Err(e);
        }
        // diff_id: the uncompressed tar; digest: the gzip file.
        let layer = (|| -> std::io::Result<NewLayer> {
            let mut input = BufReader::with_capacity(1 << 20, std::fs::File::open(&tar_path)?);
            let out = Hashing {
                inner: std::io::BufWriter::new(std::fs::File::create(&gz_path)?),
                hash: Sha256::new(),
                count: 0,
            };
            let mut gz = GzEncoder::new(out, flate2::Compression::fast());
            let mut diff = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = input.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                diff.update(&buf[..n]);
                gz.write_all(&buf[..n])?;
            }
            let mut out = gz.finish()?;
            out.flush()?;
            Ok(NewLayer {
                file: gz_path.clone(),
                digest: format!("sha256:{}", hex::encode(out.hash.finalize())),
                size: out.count,
                diff_id: format!("sha256:{}", hex::encode(diff.finalize())),
            })
        })();
        if let Ok(layer) = &layer {
            // The new image's first run needs this layer unpacked: done now, from the tar that
            // is still here (and in the page cache), the run costs what any run costs instead
            // of decompressing the blob it was just compressed into.
            let tar = crate::image::LayerRef {
                diff_id: layer.diff_id.clone(),
                blob_path: tar_path.clone(),
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                size: std::fs::metadata(&tar_path).map_or(0, |m| m.len()),
            };
            if let Err(e) = self.layers.ensure(std::slice::from_ref(&tar), &self.ids) {
                eprintln!("warning: {e}; the new image's first run unpacks its layer");
            }
        }
        cleanup();
        let layer = layer.map_err(super::io("compressing the new layer in", &scratch))?;

        let mut config: ImageConfiguration = parent.config.clone();
        let now = clock::rfc3339(clock::now_nanos());
        let mut c = config.config().clone().unwrap_or_default();
        // The container's process, as Docker records it.
        if let Ok(spec) = crate::container::process::load_spec(&self.containers.dir(&rec.id)) {
            if let Some(p) = spec.process() {
                let args = p.args().clone().unwrap_or_default();
                let ep = c.entrypoint().clone().unwrap_or_default();
                if !ep.is_empty() && args.starts_with(&ep) {
                    c.set_cmd(Some(args[ep.len()..].to_vec()));
                } else if !args.is_empty() {
                    c.set_entrypoint(None);
                    c.set_cmd(Some(args));
                }
                let env: Vec<String> = p
                    .env()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| !e.starts_with("HOSTNAME="))
                    .collect();
                c.set_env(Some(env));
                c.set_working_dir(Some(p.cwd().display().to_string()));
            }
        }
        for change in &opts.changes {
            apply_change(&mut c, change)?;
        }
        config.set_config(Some(c));
        config.set_created(Some(now.clone()));
        if let Some(a) = &opts.author {
            config.set_author(Some(a.clone()));
        }
        let mut rootfs = config.rootfs().clone();
        let mut diff_ids = rootfs.diff_ids().clone();
        diff_ids.push(layer.diff_id.clone());
        rootfs.set_diff_ids(diff_ids);
        config.set_rootfs(rootfs);
        let mut history = config.history().clone().unwrap_or_default();
        let mut entry = HistoryBuilder::default()
            .created(now)
            .created_by(format!("berth commit {}", rec.command.join(" ")));
        if let Some(m) = &opts.message {
            entry = entry.comment(m.clone());
        }
        if let Some(a) = &opts.author {
            entry = entry.author(a.clone());
        }
        history.push(
            entry
                .build()
                .map_err(|e| EngineError::Usage(format!("building the history entry: {e}")))?,
        );
        config.set_history(Some(history));
        let id = self
            .images
            .add_committed(&parent, &layer, &config, name, opts.message.as_deref());
        let _ = std::fs::remove_file(&gz_path);
        Ok(id?)
    }
}

impl super::Engine {
    /// The writable layer of running microVM `rec` as a layer tar at `out`: the agent archives
    /// the guest's overlay upper directory. The /etc files berth writes into every sandbox are
    /// left out, as Docker leaves out a container's bind-mounted hosts, hostname and
    /// resolv.conf.
    fn vm_layer(&self, rec: &ContainerRecord, out: &std::path::Path) -> Result<(), EngineError> {
        let file = std::fs::File::create(out).map_err(super::io("creating", out))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let job = Builtin::Layer {
            skip: ["etc/hostname", "etc/hosts", "etc/resolv.conf"]
                .map(String::from)
                .to_vec(),
        };
        self.vm_job(rec, "berth commit", job, None, &mut w)?;
        w.flush().map_err(super::io("writing", out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_like_dockerfile_instructions() {
        let mut c = oci_spec::image::Config::default();
        apply_change(&mut c, r#"CMD ["echo", "hi"]"#).unwrap();
        assert_eq!(c.cmd().clone().unwrap(), vec!["echo", "hi"]);
        apply_change(&mut c, "ENTRYPOINT run me").unwrap();
        assert_eq!(
            c.entrypoint().clone().unwrap(),
            vec!["/bin/sh", "-c", "run me"]
        );
        apply_change(&mut c, "ENV A=1").unwrap();
        apply_change(&mut c, "ENV B 2").unwrap();
        assert_eq!(c.env().clone().unwrap(), vec!["A=1", "B=2"]);
        apply_change(&mut c, "LABEL x=y").unwrap();
        assert_eq!(c.labels().clone().unwrap()["x"], "y");
        assert!(apply_change(&mut c, "RUN make").is_err());
    }
}
