//! Appends audit records as JSON lines to a file (I/O edge). Each record is
//! written with one `write` call and flushed, so concurrent readers
//! (`tail -f`) never see half a line from us.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use gateway_core::access::AuditRecord;

pub struct AuditLog {
    path: PathBuf,
    file: File,
}

impl AuditLog {
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening audit log {}", path.display()))?;
        Ok(AuditLog { path, file })
    }

    pub fn write(&mut self, record: &AuditRecord) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(record).context("encoding audit record")?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .with_context(|| format!("appending to audit log {}", self.path.display()))
    }

    pub fn write_all<'a>(&mut self, records: impl IntoIterator<Item = &'a AuditRecord>) -> anyhow::Result<()> {
        records.into_iter().try_for_each(|r| self.write(r))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gateway_core::access::audit::policy_change;
    use gateway_core::access::Staleness;

    #[test]
    fn appends_one_json_line_per_record_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rec = policy_change(&Staleness::default(), true, None, 0);
        AuditLog::open(&path).unwrap().write(&rec).unwrap();
        AuditLog::open(&path).unwrap().write(&rec).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<AuditRecord> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines, vec![rec.clone(), rec]);
    }
}
