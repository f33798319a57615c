//! A CPU limit for one process (a cgroup with a CFS quota), to show what a slow or busy
//! machine does to a meeting. cgroup v1 (`/sys/fs/cgroup/cpu`) and v2 (`cpu.max`) are both
//! handled; creating one needs root, as the network-namespace tests do.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The CFS period the quota is a share of.
const PERIOD_US: u64 = 100_000;

/// A cgroup holding processes to `share` of one core; removed on drop (its processes go
/// back to the root group).
#[derive(Debug)]
pub struct CpuLimit {
    dir: PathBuf,
    /// The root group's process list (where processes go back to).
    root_procs: PathBuf,
}

impl CpuLimit {
    /// A new group named `name`, limited to `share` (0–1) of one core.
    pub fn new(name: &str, share: f64) -> anyhow::Result<Self> {
        let quota = ((share * PERIOD_US as f64) as u64).max(1_000);
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        if v1.join("cpu.cfs_quota_us").exists() {
            let dir = v1.join(name);
            std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
            std::fs::write(dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
            std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
            Ok(Self {
                dir,
                root_procs: v1.join("cgroup.procs"),
            })
        } else if v2.exists() {
            let root = Path::new("/sys/fs/cgroup");
            // The cpu controller must be enabled for the root's children.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu");
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
            std::fs::write(dir.join("cpu.max"), format!("{quota} {PERIOD_US}"))
                .context("cpu.max (is the cpu controller available?)")?;
            Ok(Self {
                dir,
                root_procs: root.join("cgroup.procs"),
            })
        } else {
            bail!("no cgroup CPU controller at /sys/fs/cgroup (v1 cpu or v2 cpu.max)")
        }
    }

    /// Puts process `pid` (and the threads it starts from now on) under the limit.
    pub fn add(&self, pid: u32) -> anyhow::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("move {pid} into {}", self.dir.display()))
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(&self.root_procs, pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
