//! virtio-9p (the 9P transport of virtio, device id 9): a host directory the guest mounts
//! with `mount -t 9p -o trans=virtio TAG DIR`, served over 9P2000.L inside the VMM process.
//!
//! The protocol is the `p9` crate's server (crosvm's, which walks one component at a time
//! with `openat(O_PATH | O_NOFOLLOW)` relative to the directory it starts from), vendored in
//! vendor/p9 with what developers' tools need from a share and the crate refused: symlinks
//! (`python3 -m venv`, npm's `node_modules/.bin`), FIFOs and sockets, and `user.*` extended
//! attributes; device nodes stay refused. crosvm runs it in a jail whose root is the shared
//! directory; berth runs it in its own process, so every request first passes [`guard`],
//! which parses the request itself and refuses what could leave the share or write to a
//! read-only one:
//! - a name that is not one plain component (`..`, `.`, empty, containing `/`) in any
//!   request that names something (walk, create, mkdir, link, rename, unlink, ...);
//! - on a read-only share, every request that changes something, and opens for writing;
//! - a write whose declared count is more than the message carries.
//!
//! A symlink inside the share is walked to, never through: the server opens it `O_NOFOLLOW`
//! as the last component, a walk past it fails (`ENOTDIR`), opening it fails (`ELOOP`), and
//! the guest kernel resolves its target in the guest's own tree.
//!
//! Ownership: the server runs as the user, so whatever the guest creates is the user's on the
//! host, whichever guest user created it. The guest sees the user's own uid and gid as 0
//! (root), as in a container whose root is mapped to the user; a `chown` to 0 becomes a
//! chown to the user; other ids show as they are on the host.
//!
//! Requests are served synchronously on the notifying vCPU thread: one request chain holds
//! one T-message in its readable buffers and gets the R-message in its writable ones.

use std::io::{self, Cursor, Read, Write};
use std::path::Path;

use super::{pop, read_config_bytes, QueueContext, VirtioDevice, F_VERSION_1};
use crate::memory::GuestMemory;

/// virtio device id of a 9P transport.
pub const TYPE_9P: u32 = 9;
/// Feature bit: the configuration space holds a mount tag.
pub const F_MOUNT_TAG: u64 = 1;
const QUEUE_SIZE: u16 = 128;
/// The largest message either side sends: the `p9` server negotiates at most 64 KiB of
/// payload plus its header.
pub const MAX_MESSAGE: usize = 64 * 1024 + 24;
/// The longest mount tag (the guest's `mount` takes it as the device name).
pub const MAX_TAG: usize = 31;
/// 9P2000.L's error reply.
const RLERROR: u8 = 7;

/// Why a share cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("{}: {source}", path.display())]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a directory: a microVM shares directories only; share the directory that holds it", .0.display())]
    NotADirectory(std::path::PathBuf),
    #[error("invalid share tag {0:?}: 1 to 31 letters and digits")]
    Tag(String),
}

/// The shared-directory device.
pub struct Share {
    server: p9::Server,
    read_only: bool,
    /// The user's ids, and the ids the guest sees them as.
    owner: (u32, u32),
    guest_owner: (u32, u32),
    /// virtio_9p_config: tag_len (le16), then the tag.
    config: Vec<u8>,
}

impl Share {
    /// Shares the directory `root` under the mount tag `tag`.
    pub fn new(root: &Path, tag: &str, read_only: bool) -> Result<Share, ShareError> {
        Share::new_owned_as(root, tag, read_only, (0, 0))
    }

    /// Shares `root` with the user's own files shown to the guest as owned by `guest_owner`
    /// (uid, gid), and a chown to those ids made a chown to the user.
    pub fn new_owned_as(
        root: &Path,
        tag: &str,
        read_only: bool,
        guest_owner: (u32, u32),
    ) -> Result<Share, ShareError> {
        if tag.is_empty() || tag.len() > MAX_TAG || !tag.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(ShareError::Tag(tag.to_string()));
        }
        let open = |source| ShareError::Open {
            path: root.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(root).map_err(open)?;
        if !meta.is_dir() {
            return Err(ShareError::NotADirectory(root.to_path_buf()));
        }
        let owner = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let server = p9::Server::new(
            root,
            [(owner.0, guest_owner.0)].into_iter().collect(),
            [(owner.1, guest_owner.1)].into_iter().collect(),
        )
        .map_err(open)?;
        let mut config = (tag.len() as u16).to_le_bytes().to_vec();
        config.extend_from_slice(tag.as_bytes());
        Ok(Share {
            server,
            read_only,
            owner,
            guest_owner,
            config,
        })
    }

    /// Answers one T-message (`request` holds at least the message): the R-message, or an
    /// error reply for what the guard refuses. `None` when the request is too short to carry
    /// a tag to answer to.
    pub fn handle(&mut self, request: &mut [u8]) -> Option<Vec<u8>> {
        let (size, tag) = guard::header(request)?;
        let Some(message) = request.get_mut(..size) else {
            return Some(error_reply(tag, libc::EINVAL));
        };
        if let Err(errno) = guard::check(message, self.read_only, self.owner, self.guest_owner) {
            return Some(error_reply(tag, errno));
        }
        let mut reply = Vec::new();
        match self
            .server
            .handle_message(&mut Cursor::new(&*message), &mut reply)
        {
            Ok(()) => Some(reply),
            Err(e) => Some(error_reply(tag, e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    /// Serves one request chain; returns the bytes written into the driver's buffers.
    fn serve(
        &mut self,
        chain: virtio_queue::DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> Option<u32> {
        let mut reader = chain.clone().reader(mem).ok()?;
        let mut writer = chain.writer(mem).ok()?;
        let mut request = vec![0u8; reader.available_bytes().min(MAX_MESSAGE)];
        reader.read_exact(&mut request).ok()?;
        let mut reply = self.handle(&mut request)?;
        if reply.len() > writer.available_bytes() {
            // The driver left too little room for the answer: tell it so, if even that fits.
            let (_, tag) = guard::header(&request)?;
            reply = error_reply(tag, libc::EMSGSIZE);
            if reply.len() > writer.available_bytes() {
                return None;
            }
        }
        writer.write_all(&reply).ok()?;
        u32::try_from(reply.len()).ok()
    }
}

/// Rlerror: size[4] type[1] tag[2] ecode[4].
fn error_reply(tag: u16, errno: i32) -> Vec<u8> {
    let mut r = Vec::with_capacity(11);
    r.extend_from_slice(&11u32.to_le_bytes());
    r.push(RLERROR);
    r.extend_from_slice(&tag.to_le_bytes());
    r.extend_from_slice(&(errno as u32).to_le_bytes());
    r
}

impl VirtioDevice for Share {
    fn device_type(&self) -> u32 {
        TYPE_9P
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | F_MOUNT_TAG
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data)
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext) {
        if index != 0 {
            return;
        }
        let mem = ctx.mem;
        loop {
            let Some(queue) = ctx.queues.get_mut(0) else {
                return;
            };
            let Some(chain) = pop(queue, mem) else {
                return;
            };
            let head = chain.head_index();
            let len = self.serve(chain, mem).unwrap_or(0);
            ctx.add_used(0, head, len);
        }
    }
}

/// berth's own reading of a T-message, before the server sees it: what may leave the share
/// or change a read-only one is refused here, with the errno the guest gets.
pub mod guard {
    /// 9P2000.L request types.
    pub const TSTATFS: u8 = 8;
    pub const TLOPEN: u8 = 12;
    pub const TLCREATE: u8 = 14;
    pub const TSYMLINK: u8 = 16;
    pub const TMKNOD: u8 = 18;
    pub const TRENAME: u8 = 20;
    pub const TGETATTR: u8 = 24;
    pub const TSETATTR: u8 = 26;
    pub const TXATTRWALK: u8 = 30;
    pub const TXATTRCREATE: u8 = 32;
    pub const TLINK: u8 = 70;
    pub const TMKDIR: u8 = 72;
    pub const TRENAMEAT: u8 = 74;
    pub const TUNLINKAT: u8 = 76;
    pub const TVERSION: u8 = 100;
    pub const TATTACH: u8 = 104;
    pub const TWALK: u8 = 110;
    pub const TREAD: u8 = 116;
    pub const TWRITE: u8 = 118;
    pub const TCLUNK: u8 = 120;
    pub const TREMOVE: u8 = 122;

    /// Tlopen flags that write (Linux's 9P open flags, include/net/9p/9p.h).
    const P9_ACCMODE: u32 = 0o3;
    const P9_CREATE: u32 = 0o100;
    const P9_TRUNC: u32 = 0o1000;
    const P9_APPEND: u32 = 0o2000;
    /// Tsetattr `valid` bits for the owner.
    const SETATTR_UID: u32 = 0x2;
    const SETATTR_GID: u32 = 0x4;

    /// The declared size and the tag of a message, if it has a header.
    pub fn header(msg: &[u8]) -> Option<(usize, u16)> {
        let size = u32::from_le_bytes(msg.get(..4)?.try_into().ok()?) as usize;
        let tag = u16::from_le_bytes(msg.get(5..7)?.try_into().ok()?);
        Some((size, tag))
    }

    /// A little-endian field reader over a message body.
    struct Fields<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Fields<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], i32> {
            let end = self.pos.checked_add(n).ok_or(libc::EINVAL)?;
            let s = self.buf.get(self.pos..end).ok_or(libc::EINVAL)?;
            self.pos = end;
            Ok(s)
        }
        fn u16(&mut self) -> Result<u16, i32> {
            Ok(u16::from_le_bytes(
                self.take(2)?.try_into().map_err(|_| libc::EINVAL)?,
            ))
        }
        fn u32(&mut self) -> Result<u32, i32> {
            Ok(u32::from_le_bytes(
                self.take(4)?.try_into().map_err(|_| libc::EINVAL)?,
            ))
        }
        fn skip(&mut self, n: usize) -> Result<(), i32> {
            self.take(n).map(|_| ())
        }
        fn string(&mut self) -> Result<&'a [u8], i32> {
            let n = self.u16()?;
            self.take(usize::from(n))
        }
        /// A name that must be one entry of the directory it is looked up in.
        fn name(&mut self) -> Result<(), i32> {
            let n = self.string()?;
            if plain_name(n) {
                Ok(())
            } else {
                Err(libc::EPERM)
            }
        }
    }

    /// One path component that stays in its directory: not empty, `.` or `..`, without `/`
    /// or NUL.
    pub fn plain_name(n: &[u8]) -> bool {
        !n.is_empty() && n != b"." && n != b".." && !n.contains(&b'/') && !n.contains(&0)
    }

    /// Checks (and for Tsetattr's owner, rewrites) one whole message. `Err` is the errno the
    /// guest gets instead of the server's answer. `guest_owner` is what the guest sees the
    /// user's ids (`owner`) as.
    pub fn check(
        msg: &mut [u8],
        read_only: bool,
        owner: (u32, u32),
        guest_owner: (u32, u32),
    ) -> Result<(), i32> {
        let ty = *msg.get(4).ok_or(libc::EINVAL)?;
        let body = msg.get(7..).ok_or(libc::EINVAL)?;
        let mut setattr_valid = None;
        let mut f = Fields { buf: body, pos: 0 };
        let writes = matches!(
            ty,
            TLCREATE
                | TSYMLINK
                | TMKNOD
                | TRENAME
                | TSETATTR
                | TXATTRCREATE
                | TLINK
                | TMKDIR
                | TRENAMEAT
                | TUNLINKAT
                | TWRITE
                | TREMOVE
        );
        if read_only && writes {
            return Err(libc::EROFS);
        }
        match ty {
            TWALK => {
                f.skip(8)?;
                let n = f.u16()?;
                for _ in 0..n {
                    f.name()?;
                }
            }
            TLOPEN => {
                f.skip(4)?;
                let flags = f.u32()?;
                let writing =
                    flags & P9_ACCMODE != 0 || flags & (P9_CREATE | P9_TRUNC | P9_APPEND) != 0;
                if read_only && writing {
                    return Err(libc::EROFS);
                }
            }
            TLCREATE | TSYMLINK | TMKNOD | TMKDIR | TUNLINKAT => {
                f.skip(4)?;
                f.name()?;
            }
            TRENAME | TLINK => {
                f.skip(8)?;
                f.name()?;
            }
            TRENAMEAT => {
                f.skip(4)?;
                f.name()?;
                f.skip(4)?;
                f.name()?;
            }
            TWRITE => {
                f.skip(12)?;
                let count = f.u32()? as usize;
                if count > body.len() - f.pos {
                    return Err(libc::EINVAL);
                }
            }
            TSETATTR => {
                f.skip(4)?;
                let valid = f.u32()?;
                f.skip(12)?;
                setattr_valid = Some(valid);
            }
            _ => {}
        }
        if let Some(valid) = setattr_valid {
            // Tsetattr: fid[4] valid[4] mode[4] uid[4] gid[4] ...; the guest's view of the
            // user is the user (the length was checked above).
            for (bit, at, host, guest) in [
                (SETATTR_UID, 7 + 12, owner.0, guest_owner.0),
                (SETATTR_GID, 7 + 16, owner.1, guest_owner.1),
            ] {
                let field = &mut msg[at..at + 4];
                if valid & bit != 0 && *field == guest.to_le_bytes() {
                    field.copy_from_slice(&host.to_le_bytes());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::guard::*;
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Builds T-messages as a guest's 9P client would.
    struct Msg(Vec<u8>);

    impl Msg {
        fn new(ty: u8) -> Msg {
            let mut v = vec![0u8; 4];
            v.push(ty);
            v.extend_from_slice(&1u16.to_le_bytes());
            Msg(v)
        }
        fn u16(mut self, v: u16) -> Msg {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Msg {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Msg {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn s(mut self, v: &str) -> Msg {
            self = self.u16(v.len() as u16);
            self.0.extend_from_slice(v.as_bytes());
            self
        }
        fn bytes(mut self, v: &[u8]) -> Msg {
            self.0.extend_from_slice(v);
            self
        }
        fn done(mut self) -> Vec<u8> {
            let n = self.0.len() as u32;
            self.0[..4].copy_from_slice(&n.to_le_bytes());
            self.0
        }
    }

    fn send(share: &mut Share, msg: Vec<u8>) -> Vec<u8> {
        let mut m = msg;
        share.handle(&mut m).expect("a reply")
    }

    /// The errno of an Rlerror reply, None for any other reply.
    fn errno(reply: &[u8]) -> Option<i32> {
        (reply[4] == RLERROR).then(|| u32::from_le_bytes(reply[7..11].try_into().unwrap()) as i32)
    }

    /// Version and attach fid 0 to the share's root.
    fn attached(root: &Path, read_only: bool) -> Share {
        let mut s = Share::new(root, "berth0", read_only).unwrap();
        let r = send(&mut s, Msg::new(TVERSION).u32(65536).s("9P2000.L").done());
        assert_eq!(errno(&r), None);
        let r = send(
            &mut s,
            Msg::new(TATTACH)
                .u32(0)
                .u32(u32::MAX)
                .s("root")
                .s("")
                .u32(0)
                .done(),
        );
        assert_eq!(errno(&r), None, "attach: {r:?}");
        s
    }

    fn walk(s: &mut Share, fid: u32, newfid: u32, names: &[&str]) -> Vec<u8> {
        let mut m = Msg::new(TWALK).u32(fid).u32(newfid).u16(names.len() as u16);
        for n in names {
            m = m.s(n);
        }
        send(s, m.done())
    }

    fn lopen(s: &mut Share, fid: u32, flags: u32) -> Vec<u8> {
        send(s, Msg::new(TLOPEN).u32(fid).u32(flags).done())
    }

    fn read(s: &mut Share, fid: u32) -> Result<Vec<u8>, i32> {
        let r = send(s, Msg::new(TREAD).u32(fid).u64(0).u32(4096).done());
        match errno(&r) {
            Some(e) => Err(e),
            None => {
                let n = u32::from_le_bytes(r[7..11].try_into().unwrap()) as usize;
                Ok(r[11..11 + n].to_vec())
            }
        }
    }

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "../etc", "/etc", "a\0b"] {
            assert!(!plain_name(bad.as_bytes()), "{bad:?}");
        }
        for good in ["a", "..a", "a..", ".hidden", "name with spaces"] {
            assert!(plain_name(good.as_bytes()), "{good:?}");
        }
    }

    #[test]
    fn walks_stay_inside_the_share() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "outside").unwrap();
        let root = dir.path().join("share");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), "inside").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("up")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("out")).unwrap();
        let mut s = attached(&root, false);

        // `..` from the root, a multi-component name, `.`: refused before the server.
        assert_eq!(errno(&walk(&mut s, 0, 1, &[".."])), Some(libc::EPERM));
        assert_eq!(
            errno(&walk(&mut s, 0, 1, &["sub", ".."])),
            Some(libc::EPERM)
        );
        assert_eq!(
            errno(&walk(&mut s, 0, 1, &["../secret"])),
            Some(libc::EPERM)
        );
        assert_eq!(errno(&walk(&mut s, 0, 1, &["sub/file"])), Some(libc::EPERM));
        // A symlink to a directory outside is not walked through...
        let r = walk(&mut s, 0, 1, &["out", "secret"]);
        assert_eq!(errno(&r), None);
        assert_eq!(
            u16::from_le_bytes([r[7], r[8]]),
            1,
            "the walk stops at the symlink"
        );
        assert_eq!(
            errno(&lopen(&mut s, 1, 0)),
            Some(libc::EBADF),
            "a partial walk makes no fid"
        );
        // ...and a symlink to a file outside does not open (the guest resolves it itself).
        assert_eq!(errno(&walk(&mut s, 0, 2, &["up"])), None);
        assert_eq!(errno(&lopen(&mut s, 2, 0)), Some(libc::ELOOP));
        assert!(read(&mut s, 2).is_err());
        // What is inside reads.
        assert_eq!(errno(&walk(&mut s, 0, 3, &["sub", "file"])), None);
        assert_eq!(errno(&lopen(&mut s, 3, 0)), None);
        assert_eq!(read(&mut s, 3).unwrap(), b"inside");
    }

    #[test]
    fn a_read_only_share_refuses_every_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "keep").unwrap();
        let mut s = attached(dir.path(), true);
        assert_eq!(errno(&walk(&mut s, 0, 1, &["f"])), None);
        for flags in [1, 2, 0o1000, 0o2000, 0o100] {
            assert_eq!(
                errno(&lopen(&mut s, 1, flags)),
                Some(libc::EROFS),
                "{flags:o}"
            );
        }
        assert_eq!(errno(&lopen(&mut s, 1, 0)), None);
        assert_eq!(read(&mut s, 1).unwrap(), b"keep");
        let refused = [
            Msg::new(TWRITE).u32(1).u64(0).u32(1).bytes(b"x").done(),
            Msg::new(TLCREATE)
                .u32(0)
                .s("new")
                .u32(1)
                .u32(0o644)
                .u32(0)
                .done(),
            Msg::new(TMKDIR).u32(0).s("d").u32(0o755).u32(0).done(),
            Msg::new(TUNLINKAT).u32(0).s("f").u32(0).done(),
            Msg::new(TRENAMEAT).u32(0).s("f").u32(0).s("g").done(),
            Msg::new(TSETATTR)
                .u32(1)
                .u32(1)
                .u32(0o777)
                .bytes(&[0; 48])
                .done(),
            Msg::new(TSYMLINK).u32(0).s("l").s("/etc").u32(0).done(),
            Msg::new(TLINK).u32(0).u32(1).s("h").done(),
            Msg::new(TMKNOD)
                .u32(0)
                .s("p")
                .u32(libc::S_IFIFO | 0o600)
                .u32(0)
                .u32(0)
                .u32(0)
                .done(),
            Msg::new(TXATTRCREATE)
                .u32(1)
                .s("user.k")
                .u64(1)
                .u32(0)
                .done(),
        ];
        for m in refused {
            let ty = m[4];
            assert_eq!(errno(&send(&mut s, m)), Some(libc::EROFS), "type {ty}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("f")).unwrap(),
            "keep"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn files_the_guest_creates_belong_to_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = attached(dir.path(), false);
        assert_eq!(errno(&walk(&mut s, 0, 1, &[])), None);
        let r = send(
            &mut s,
            Msg::new(TLCREATE)
                .u32(1)
                .s("new")
                .u32(2)
                .u32(0o644)
                .u32(0)
                .done(),
        );
        assert_eq!(errno(&r), None, "{r:?}");
        let r = send(
            &mut s,
            Msg::new(TWRITE).u32(1).u64(0).u32(5).bytes(b"hello").done(),
        );
        assert_eq!(errno(&r), None);
        // A count past the message's end is refused, not trusted.
        let r = send(
            &mut s,
            Msg::new(TWRITE)
                .u32(1)
                .u64(0)
                .u32(1 << 24)
                .bytes(b"x")
                .done(),
        );
        assert_eq!(errno(&r), Some(libc::EINVAL));
        let path = dir.path().join("new");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.uid(), nix::unistd::getuid().as_raw());
        // chown to the guest's root is a chown to the user: allowed, a no-op on the host.
        let setattr = Msg::new(TSETATTR)
            .u32(1)
            .u32(0x2 | 0x4)
            .u32(0)
            .u32(0)
            .u32(0)
            .bytes(&[0; 40])
            .done();
        assert_eq!(errno(&send(&mut s, setattr)), None);
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), meta.uid());
        // The guest sees the user as root.
        let r = send(&mut s, Msg::new(TGETATTR).u32(1).u64(0x7ff).done());
        assert_eq!(errno(&r), None);
        // Rgetattr: valid[8] qid[13] mode[4] uid[4] gid[4].
        let uid = u32::from_le_bytes(r[7 + 8 + 13 + 4..7 + 8 + 13 + 8].try_into().unwrap());
        assert_eq!(uid, 0);
        // Creating through a name that is not a plain component is refused.
        let r = send(
            &mut s,
            Msg::new(TMKDIR)
                .u32(0)
                .s("../escape")
                .u32(0o755)
                .u32(0)
                .done(),
        );
        assert_eq!(errno(&r), Some(libc::EPERM));
        assert!(!dir.path().parent().unwrap().join("escape").exists());
    }

    /// The host's value of user xattr `name` on `path`, if it has one.
    fn host_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let n = std::ffi::CString::new(name).unwrap();
        let mut buf = vec![0u8; 256];
        // SAFETY: getxattr writes at most buf.len() bytes into buf.
        let len = unsafe {
            libc::getxattr(
                p.as_ptr(),
                n.as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        (len >= 0).then(|| buf[..len as usize].to_vec())
    }

    /// What `python3 -m venv` and npm's `node_modules/.bin` need from a share: symlinks (made
    /// as asked, read back, never followed by the server), hard links, FIFOs and sockets, and
    /// user.* extended attributes; device nodes and other xattr namespaces stay refused.
    #[test]
    fn links_special_files_and_user_xattrs_are_served() {
        const TREADLINK: u8 = 22;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "outside").unwrap();
        let root = dir.path().join("share");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("file"), "data").unwrap();
        let mut s = attached(&root, false);

        // A symlink, with a target that leaves the share: made as asked, read back as made.
        let r = send(
            &mut s,
            Msg::new(TSYMLINK)
                .u32(0)
                .s("lib64")
                .s("../secret")
                .u32(0)
                .done(),
        );
        assert_eq!(errno(&r), None, "{r:?}");
        assert_eq!(
            std::fs::read_link(root.join("lib64")).unwrap(),
            Path::new("../secret")
        );
        assert_eq!(errno(&walk(&mut s, 0, 1, &["lib64"])), None);
        let r = send(&mut s, Msg::new(TREADLINK).u32(1).done());
        assert_eq!(errno(&r), None);
        assert_eq!(&r[9..], b"../secret", "Rreadlink: target[s]");
        // ...and never followed by the server: opening it fails, walking past it stops.
        assert_eq!(errno(&lopen(&mut s, 1, 0)), Some(libc::ELOOP));
        assert!(read(&mut s, 1).is_err());
        // A symlink's name is one component, as every other name.
        let r = send(
            &mut s,
            Msg::new(TSYMLINK).u32(0).s("../up").s("x").u32(0).done(),
        );
        assert_eq!(errno(&r), Some(libc::EPERM));
        assert!(!dir.path().join("up").exists());

        // A hard link: a second name for the same file.
        assert_eq!(errno(&walk(&mut s, 0, 2, &["file"])), None);
        let r = send(&mut s, Msg::new(TLINK).u32(0).u32(2).s("again").done());
        assert_eq!(errno(&r), None, "{r:?}");
        assert_eq!(
            std::fs::metadata(root.join("again")).unwrap().ino(),
            std::fs::metadata(root.join("file")).unwrap().ino()
        );

        // A FIFO and a socket are made; a device node is not.
        let r = send(
            &mut s,
            Msg::new(TMKNOD)
                .u32(0)
                .s("fifo")
                .u32(libc::S_IFIFO | 0o600)
                .u32(0)
                .u32(0)
                .u32(0)
                .done(),
        );
        assert_eq!(errno(&r), None, "{r:?}");
        use std::os::unix::fs::FileTypeExt;
        let ft = std::fs::symlink_metadata(root.join("fifo"))
            .unwrap()
            .file_type();
        assert!(ft.is_fifo());
        let r = send(
            &mut s,
            Msg::new(TMKNOD)
                .u32(0)
                .s("sock")
                .u32(libc::S_IFSOCK | 0o600)
                .u32(0)
                .u32(0)
                .u32(0)
                .done(),
        );
        assert_eq!(errno(&r), None, "{r:?}");
        for (name, kind) in [("null", libc::S_IFCHR), ("disk", libc::S_IFBLK)] {
            let r = send(
                &mut s,
                Msg::new(TMKNOD)
                    .u32(0)
                    .s(name)
                    .u32(kind | 0o666)
                    .u32(1)
                    .u32(3)
                    .u32(0)
                    .done(),
            );
            assert_eq!(errno(&r), Some(libc::EPERM), "{name}");
            assert!(
                std::fs::symlink_metadata(root.join(name)).is_err(),
                "{name}"
            );
        }

        // user.* xattrs: set through a fid (Txattrcreate, Twrite, Tclunk), read and listed
        // through a new one (Txattrwalk, Tread), removed with a zero size.
        let set = |s: &mut Share, fid: u32, name: &str, value: &[u8]| {
            assert_eq!(errno(&walk(s, 0, fid, &["file"])), None);
            let r = send(
                s,
                Msg::new(TXATTRCREATE)
                    .u32(fid)
                    .s(name)
                    .u64(value.len() as u64)
                    .u32(0)
                    .done(),
            );
            if let Some(e) = errno(&r) {
                return Err(e);
            }
            if !value.is_empty() {
                let w = Msg::new(TWRITE)
                    .u32(fid)
                    .u64(0)
                    .u32(value.len() as u32)
                    .bytes(value)
                    .done();
                assert_eq!(errno(&send(s, w)), None);
            }
            match errno(&send(s, Msg::new(TCLUNK).u32(fid).done())) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        };
        let get = |s: &mut Share, fid: u32, name: &str| {
            let r = send(s, Msg::new(TXATTRWALK).u32(2).u32(fid).s(name).done());
            if let Some(e) = errno(&r) {
                return Err(e);
            }
            let v = read(s, fid);
            assert_eq!(errno(&send(s, Msg::new(TCLUNK).u32(fid).done())), None);
            v
        };
        set(&mut s, 10, "user.origin", b"guest").unwrap();
        assert_eq!(
            host_xattr(&root.join("file"), "user.origin").as_deref(),
            Some(&b"guest"[..])
        );
        assert_eq!(get(&mut s, 11, "user.origin").unwrap(), b"guest");
        assert_eq!(get(&mut s, 12, "").unwrap(), b"user.origin\0");
        assert_eq!(get(&mut s, 13, "user.none"), Err(libc::ENODATA));
        // Other namespaces: not served, in either direction.
        assert_eq!(
            set(&mut s, 14, "trusted.overlay.opaque", b"y"),
            Err(libc::EOPNOTSUPP)
        );
        assert_eq!(get(&mut s, 15, "security.capability"), Err(libc::ENODATA));
        // Not on a symlink (Linux allows user.* on files and directories only).
        let r = send(
            &mut s,
            Msg::new(TXATTRCREATE)
                .u32(1)
                .s("user.x")
                .u64(1)
                .u32(0)
                .done(),
        );
        assert_eq!(errno(&r), Some(libc::EPERM));
        // A value shorter than announced is not set.
        assert_eq!(errno(&walk(&mut s, 0, 16, &["file"])), None);
        let r = send(
            &mut s,
            Msg::new(TXATTRCREATE)
                .u32(16)
                .s("user.short")
                .u64(4)
                .u32(0)
                .done(),
        );
        assert_eq!(errno(&r), None);
        let w = Msg::new(TWRITE).u32(16).u64(0).u32(2).bytes(b"ab").done();
        assert_eq!(errno(&send(&mut s, w)), None);
        assert_eq!(
            errno(&send(&mut s, Msg::new(TCLUNK).u32(16).done())),
            Some(libc::EINVAL)
        );
        assert_eq!(host_xattr(&root.join("file"), "user.short"), None);
        // Removal.
        set(&mut s, 17, "user.origin", b"").unwrap();
        assert_eq!(host_xattr(&root.join("file"), "user.origin"), None);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("secret")).unwrap(),
            "outside"
        );
    }

    /// keep-id: the guest sees the user's files as owned by the ids it runs as, and a chown
    /// to those ids is a chown to the user (a no-op on the host), not to a stranger's ids.
    #[test]
    fn a_share_can_show_the_user_as_other_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let mut s = Share::new_owned_as(dir.path(), "berth0", false, (4321, 8765)).unwrap();
        assert_eq!(
            errno(&send(
                &mut s,
                Msg::new(TVERSION).u32(65536).s("9P2000.L").done()
            )),
            None
        );
        let attach = Msg::new(TATTACH)
            .u32(0)
            .u32(u32::MAX)
            .s("u")
            .s("")
            .u32(4321)
            .done();
        assert_eq!(errno(&send(&mut s, attach)), None);
        assert_eq!(errno(&walk(&mut s, 0, 1, &["f"])), None);
        let r = send(&mut s, Msg::new(TGETATTR).u32(1).u64(0x7ff).done());
        // Rgetattr: valid[8] qid[13] mode[4] uid[4] gid[4].
        let at = 7 + 8 + 13 + 4;
        let uid = u32::from_le_bytes(r[at..at + 4].try_into().unwrap());
        let gid = u32::from_le_bytes(r[at + 4..at + 8].try_into().unwrap());
        assert_eq!((uid, gid), (4321, 8765));
        let setattr = Msg::new(TSETATTR)
            .u32(1)
            .u32(0x2 | 0x4)
            .u32(0)
            .u32(4321)
            .u32(8765)
            .bytes(&[0; 40])
            .done();
        assert_eq!(errno(&send(&mut s, setattr)), None);
        let meta = std::fs::metadata(dir.path().join("f")).unwrap();
        assert_eq!(meta.uid(), nix::unistd::getuid().as_raw());
    }

    #[test]
    fn malformed_messages_get_an_error_reply() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = attached(dir.path(), false);
        // Too short for a tag: nothing to answer.
        assert!(s.handle(&mut [1, 2, 3]).is_none());
        // A size past the buffer, a truncated walk, an unknown type, garbage.
        let mut big = Msg::new(TWALK).done();
        big[..4].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(errno(&send(&mut s, big)), Some(libc::EINVAL));
        let short = Msg::new(TWALK).u32(0).u32(1).u16(3).s("a").done();
        assert!(errno(&send(&mut s, short)).is_some());
        assert!(errno(&send(&mut s, Msg::new(250).u32(0).done())).is_some());
        let junk = Msg::new(TSTATFS).bytes(&[0xff; 3]).done();
        assert!(errno(&send(&mut s, junk)).is_some());
        // And the share keeps serving.
        assert_eq!(errno(&walk(&mut s, 0, 5, &[])), None);
    }

    #[test]
    fn tags_and_roots_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Share::new(dir.path(), "bad/tag", false),
            Err(ShareError::Tag(_))
        ));
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            Share::new(&file, "berth0", false),
            Err(ShareError::NotADirectory(_))
        ));
        let s = Share::new(dir.path(), "berth0", false).unwrap();
        let mut cfg = [0u8; 8];
        s.read_config(0, &mut cfg);
        assert_eq!(&cfg, b"\x06\x00berth0");
        assert_eq!(s.features() & F_MOUNT_TAG, F_MOUNT_TAG);
    }
}
