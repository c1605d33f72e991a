//! Layer compression: sniffed from the first bytes, never trusted from a media type.

use std::io::{self, BufRead, Read};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Looks at the start of `reader` without consuming it.
    pub(crate) fn sniff(reader: &mut impl BufRead) -> io::Result<Compression> {
        let head = reader.fill_buf()?;
        Ok(if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        })
    }

    /// A reader of the uncompressed stream.
    pub(crate) fn decoder<'a, R: BufRead + 'a>(self, reader: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(data: &[u8], c: Compression) {
        let mut r = data;
        assert_eq!(Compression::sniff(&mut r).unwrap(), c);
    }

    #[test]
    fn sniffs_by_magic() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"abc").unwrap();
        let gz = gz.finish().unwrap();
        roundtrip(&gz, Compression::Gzip);
        let zs = zstd::encode_all(&b"abc"[..], 1).unwrap();
        roundtrip(&zs, Compression::Zstd);
        roundtrip(b"plain tar", Compression::None);
        roundtrip(b"", Compression::None);
        let mut out = String::new();
        Compression::Zstd
            .decoder(&zs[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "abc");
    }
}
