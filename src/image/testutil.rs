//! Builders of real tar streams and image archives for the image tests,
//! including hostile ones the `tar` crate's safe API refuses to write.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use sha2::{Digest as _, Sha256};

pub(crate) fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub(crate) fn hex_of(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 1).unwrap()
}

/// A tar stream built entry by entry, paths written verbatim.
pub(crate) struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
}

impl TarWriter {
    pub(crate) fn new() -> Self {
        TarWriter {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, path: &str, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        let name = &mut h.as_old_mut().name;
        assert!(path.len() < name.len(), "test path too long");
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn push(mut self, mut h: tar::Header, data: &[u8]) -> Self {
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub(crate) fn file(self, path: &str, data: &[u8], mode: u32) -> Self {
        let h = Self::header(tar::EntryType::Regular, path, data.len() as u64, mode);
        self.push(h, data)
    }

    pub(crate) fn dir(self, path: &str, mode: u32) -> Self {
        let h = Self::header(tar::EntryType::Directory, path, 0, mode);
        self.push(h, &[])
    }

    fn link(self, kind: tar::EntryType, path: &str, target: &str) -> Self {
        let mut h = Self::header(kind, path, 0, 0o777);
        let linkname = &mut h.as_old_mut().linkname;
        assert!(target.len() < linkname.len(), "test link target too long");
        linkname[..target.len()].copy_from_slice(target.as_bytes());
        self.push(h, &[])
    }

    pub(crate) fn symlink(self, path: &str, target: &str) -> Self {
        self.link(tar::EntryType::Symlink, path, target)
    }

    pub(crate) fn hardlink(self, path: &str, target: &str) -> Self {
        self.link(tar::EntryType::Link, path, target)
    }

    pub(crate) fn fifo(self, path: &str, mode: u32) -> Self {
        let h = Self::header(tar::EntryType::Fifo, path, 0, mode);
        self.push(h, &[])
    }

    pub(crate) fn char_device(self, path: &str, major: u32, minor: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Char, path, 0, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, &[])
    }

    /// A PAX extended header applying to the next entry.
    pub(crate) fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
            let mut len = body_len + 1;
            while len.to_string().len() + body_len != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let h = Self::header(
            tar::EntryType::XHeader,
            "PaxHeader",
            data.len() as u64,
            0o644,
        );
        self.push(h, &data)
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// The first test layer: a small tree with a directory to be made opaque.
pub(crate) fn layer_one() -> Vec<u8> {
    TarWriter::new()
        .dir("etc/", 0o755)
        .file("etc/hostname", b"berth\n", 0o644)
        .file("etc/gone", b"deleted later\n", 0o644)
        .dir("opq/", 0o755)
        .file("opq/old", b"hidden later\n", 0o644)
        .finish()
}

/// The second test layer: a whiteout and an opaque directory.
pub(crate) fn layer_two() -> Vec<u8> {
    TarWriter::new()
        .file("etc/.wh.gone", b"", 0o644)
        .file("opq/.wh..wh..opq", b"", 0o644)
        .file("opq/new", b"fresh\n", 0o644)
        .finish()
}

pub(crate) fn config_json(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// Files of an archive, written as a tar in path order.
#[derive(Default)]
pub(crate) struct ArchiveFiles(pub(crate) BTreeMap<String, Vec<u8>>);

impl ArchiveFiles {
    pub(crate) fn blob(&mut self, data: &[u8]) -> String {
        self.0
            .insert(format!("blobs/sha256/{}", hex_of(data)), data.to_vec());
        sha256(data)
    }

    pub(crate) fn write(&self, path: &Path) {
        let mut t = TarWriter::new();
        for (name, data) in &self.0 {
            t = t.file(name, data, 0o644);
        }
        std::fs::write(path, t.finish()).unwrap();
    }
}

/// An OCI layout with one image of `layers` (as stored, e.g. gzipped) whose
/// uncompressed forms are `plain`; returns the files and the config digest.
pub(crate) fn oci_image(
    layers: &[Vec<u8>],
    plain: &[Vec<u8>],
    ref_name: Option<&str>,
) -> (ArchiveFiles, String) {
    let mut files = ArchiveFiles::default();
    let diff_ids: Vec<String> = plain.iter().map(|p| sha256(p)).collect();
    let config = config_json(&diff_ids);
    let config_digest = files.blob(&config);
    let layer_descs: Vec<_> = layers
        .iter()
        .map(|l| {
            let digest = files.blob(l);
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": l.len(),
            })
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layer_descs,
    }))
    .unwrap();
    let manifest_digest = files.blob(&manifest);
    let mut desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest,
        "size": manifest.len(),
    });
    if let Some(name) = ref_name {
        desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": name});
    }
    files.0.insert(
        "index.json".into(),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [desc]})).unwrap(),
    );
    files.0.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    (files, config_digest)
}

/// `lgetxattr(2)`, for checking what an unpack wrote.
pub(crate) fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let c_name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated strings that outlive the call; `buf` is writable for its length.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}
