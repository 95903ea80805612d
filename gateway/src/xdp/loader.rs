//! Loading, attaching, pinning and detaching the XDP program (I/O edge).
//! Everything lives under `/sys/fs/bpf/<instance>/`: the maps (by their
//! names in `gateway_common`), the program (`prog`) and the bpf_link
//! (`link`), so the program stays attached after `gateway xdp attach`
//! exits and any process can read or change the maps through the pins.

use super::OBJECT;
use aya::{
    programs::{links::FdLink, links::PinnedLink, Xdp, XdpMode},
    Btf, EbpfLoader,
};
use gateway_common::{XdpConfig, ALL_MAPS, MAP_CONFIG, PROGRAM_NAME};
use std::path::{Path, PathBuf};

/// Where bpffs is (or gets) mounted.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// `statfs` magic of bpffs (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("this binary has no eBPF object embedded: run `cargo xtask build-ebpf`, then rebuild the gateway")]
    NotEmbedded,
    #[error("invalid instance name {0:?}: use 1-64 characters from [A-Za-z0-9_-]")]
    InvalidInstance(String),
    #[error("XDP instance {instance:?} is already attached (pinned at {dir}); run `gateway xdp detach --instance {instance}` first")]
    AlreadyAttached { instance: String, dir: PathBuf },
    #[error("XDP instance {instance:?} is not attached (nothing pinned at {dir})")]
    NotAttached { instance: String, dir: PathBuf },
    #[error("network interface {0:?} does not exist")]
    UnknownInterface(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// How to attach: the kernel's choice, native (driver) or generic (skb).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeChoice {
    #[default]
    Auto,
    Driver,
    Skb,
}

impl From<XdpModeChoice> for XdpMode {
    fn from(m: XdpModeChoice) -> Self {
        match m {
            XdpModeChoice::Auto => XdpMode::Default,
            XdpModeChoice::Driver => XdpMode::Driver,
            XdpModeChoice::Skb => XdpMode::Skb,
        }
    }
}

/// The pin folder of one gateway instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    instance: String,
    path: PathBuf,
}

impl PinDir {
    pub fn for_instance(instance: &str) -> Result<Self, XdpError> {
        Self::under(Path::new(BPFFS_ROOT), instance)
    }

    /// A pin folder under another bpffs root (tests).
    pub fn under(root: &Path, instance: &str) -> Result<Self, XdpError> {
        let valid = !instance.is_empty()
            && instance.len() <= 64
            && instance.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(XdpError::InvalidInstance(instance.to_string()));
        }
        Ok(PinDir { instance: instance.to_string(), path: root.join(instance) })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
    pub fn link(&self) -> PathBuf {
        self.path.join("link")
    }
    pub fn program(&self) -> PathBuf {
        self.path.join("prog")
    }
    pub fn is_attached(&self) -> bool {
        self.link().exists()
    }
}

/// What to attach where.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    pub iface: String,
    pub instance: String,
    pub config: XdpConfig,
    pub xdp_mode: XdpModeChoice,
    /// Detach an instance of the same name first instead of failing.
    pub replace: bool,
}

/// Mounts bpffs at `/sys/fs/bpf` if nothing is mounted there (minimal
/// containers and VMs without systemd do not mount it).
pub fn ensure_bpffs() -> anyhow::Result<()> {
    use anyhow::Context;
    let root = Path::new(BPFFS_ROOT);
    std::fs::create_dir_all(root).with_context(|| format!("creating {BPFFS_ROOT}"))?;
    let stat = nix::sys::statfs::statfs(root).with_context(|| format!("statfs {BPFFS_ROOT}"))?;
    if stat.filesystem_type().0 as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting bpffs at {BPFFS_ROOT} (needs CAP_SYS_ADMIN)"))?;
    Ok(())
}

/// Loads the embedded program, pins its maps, writes the configuration and
/// attaches it to `opts.iface` through a pinned bpf_link.
pub fn attach(opts: &AttachOptions) -> Result<PinDir, XdpError> {
    use anyhow::Context;
    if OBJECT.is_empty() {
        return Err(XdpError::NotEmbedded);
    }
    if nix::net::if_::if_nametoindex(opts.iface.as_str()).is_err() {
        return Err(XdpError::UnknownInterface(opts.iface.clone()));
    }
    ensure_bpffs()?;
    let pins = PinDir::for_instance(&opts.instance)?;
    if pins.is_attached() {
        if !opts.replace {
            return Err(XdpError::AlreadyAttached {
                instance: opts.instance.clone(),
                dir: pins.path().to_path_buf(),
            });
        }
        detach(&opts.instance)?;
    }
    // Pins left by a crash between pinning and attaching are stale: start clean.
    remove_pins(&pins);
    std::fs::create_dir_all(pins.path())
        .with_context(|| format!("creating pin folder {}", pins.path().display()))?;

    let btf = Btf::from_sys_fs().ok();
    let mut ebpf = EbpfLoader::new()
        .btf(btf.as_ref())
        .load(OBJECT)
        .context("loading the eBPF object")?;
    for name in ALL_MAPS {
        let map = ebpf.map(name).with_context(|| format!("map {name} missing from the object"))?;
        map.pin(pins.map(name)).with_context(|| format!("pinning map {name}"))?;
    }
    {
        let mut xdp_config = opts.config;
        if xdp_config.hash_seed == 0 {
            xdp_config.hash_seed = random_seed();
        }
        let map = ebpf.map_mut(MAP_CONFIG).context("config map missing")?;
        let mut config: aya::maps::Array<_, XdpConfig> =
            aya::maps::Array::try_from(map).context("config map has the wrong type")?;
        config.set(0, xdp_config, 0).context("writing the XDP config")?;
    }
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM_NAME)
        .with_context(|| format!("program {PROGRAM_NAME} missing from the object"))?
        .try_into()
        .context("program is not XDP")?;
    program.load().context("loading the XDP program (verifier)")?;
    program.pin(pins.program()).context("pinning the program")?;
    let link_id = program
        .attach(&opts.iface, opts.xdp_mode.into())
        .with_context(|| format!("attaching XDP to {}", opts.iface))?;
    let link = program.take_link(link_id).context("taking the XDP link")?;
    let fd_link: FdLink = link
        .try_into()
        .context("the kernel attached XDP without a bpf_link (needs Linux 5.9+)")?;
    fd_link.pin(pins.link()).context("pinning the XDP link")?;
    Ok(pins)
}

/// A random non-zero hash seed for the deny and rate-limit tables.
fn random_seed() -> u32 {
    use rand_core::RngCore;
    let seed = rand_core::OsRng.next_u32();
    seed.max(1)
}

/// Detaches the program (unpinning its link ends the attachment) and removes
/// every pin of the instance.
pub fn detach(instance: &str) -> Result<(), XdpError> {
    use anyhow::Context;
    let pins = PinDir::for_instance(instance)?;
    if !pins.path().exists() {
        return Err(XdpError::NotAttached {
            instance: instance.to_string(),
            dir: pins.path().to_path_buf(),
        });
    }
    if pins.is_attached() {
        let link = PinnedLink::from_pin(pins.link()).context("opening the pinned XDP link")?;
        // Dropping the last reference to an unpinned link detaches the program.
        drop(link.unpin().context("unpinning the XDP link")?);
    }
    remove_pins(&pins);
    Ok(())
}

fn remove_pins(pins: &PinDir) {
    for name in ALL_MAPS {
        let _ = std::fs::remove_file(pins.map(name));
    }
    let _ = std::fs::remove_file(pins.program());
    let _ = std::fs::remove_file(pins.link());
    let _ = std::fs::remove_dir(pins.path());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_validated() {
        assert!(PinDir::for_instance("gateway").is_ok());
        assert!(PinDir::for_instance("gw-1_a").is_ok());
        for bad in ["", "../etc", "a/b", "x y", &"a".repeat(65)] {
            assert!(
                matches!(PinDir::for_instance(bad), Err(XdpError::InvalidInstance(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn pins_live_under_the_instance_folder() {
        let pins = PinDir::for_instance("gw").expect("valid");
        assert_eq!(pins.map("GW_STATS"), Path::new("/sys/fs/bpf/gw/GW_STATS"));
        assert_eq!(pins.link(), Path::new("/sys/fs/bpf/gw/link"));
    }
}
