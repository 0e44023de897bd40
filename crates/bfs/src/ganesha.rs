//! nfs-ganesha for `bfs bench andrew --ganesha`: NFSv3 over TCP on free ports
//! of 127.0.0.1, exporting a tmpfs folder, NLM and RQUOTA off; rpcbind first
//! (ganesha registers with it) unless one already runs. Stopped when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pbft_node::launcher::Processes;

pub struct Ganesha {
    procs: Processes,
    pub nfs: SocketAddr,
    pub mount: SocketAddr,
    pub export: String,
    tmpfs: bool,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Ganesha {
    pub fn start(base: &Path) -> Result<Ganesha> {
        let dir = base.join("ganesha");
        let export = dir.join("export");
        std::fs::create_dir_all(&export)?;
        let tmpfs =
            Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&export).status().is_ok_and(|s| s.success());
        let (nfs_port, mnt_port) = (free_port()?, free_port()?);
        let conf = dir.join("ganesha.conf");
        std::fs::write(
            &conf,
            format!(
                "NFS_CORE_PARAM {{ Protocols = 3; NFS_Port = {nfs_port}; MNT_Port = {mnt_port}; Bind_Addr = 127.0.0.1; \
                 Enable_NLM = false; Enable_RQUOTA = false; }}\n\
                 EXPORT {{ Export_Id = 1; Path = {e}; Pseudo = /export; Access_Type = RW; Squash = No_Root_Squash; \
                 Protocols = 3; Transports = TCP; SecType = sys; FSAL {{ Name = VFS; }} }}\n\
                 LOG {{ Default_Log_Level = WARN; }}\n",
                e = export.display()
            ),
        )?;
        let mut procs = Processes::new();
        if TcpStream::connect("127.0.0.1:111").is_err() {
            let mut rpcbind = Command::new("rpcbind");
            rpcbind.args(["-f", "-w"]).stdout(Stdio::null()).stderr(Stdio::null());
            procs.spawn("rpcbind", rpcbind).context("starting rpcbind (apt-get install rpcbind)")?;
            std::thread::sleep(Duration::from_millis(300));
        }
        let mut g = Command::new("ganesha.nfsd");
        g.arg("-F").arg("-f").arg(&conf).arg("-L").arg(dir.join("ganesha.log")).arg("-p").arg(dir.join("ganesha.pid"));
        g.stdout(Stdio::null()).stderr(Stdio::null());
        procs.spawn("ganesha", g).context("starting ganesha.nfsd (apt-get install nfs-ganesha nfs-ganesha-vfs)")?;
        let nfs: SocketAddr = ([127, 0, 0, 1], nfs_port).into();
        let mount: SocketAddr = ([127, 0, 0, 1], mnt_port).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        while bfs::nfs_client::NfsTcp::mount(mount, &export.display().to_string()).is_err() {
            if Instant::now() > deadline || !procs.exited().is_empty() {
                bail!("nfs-ganesha did not serve {} (log in {})", export.display(), dir.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(Ganesha { procs, nfs, mount, export: export.display().to_string(), tmpfs })
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        self.procs.kill_all();
        if self.tmpfs {
            let _ = Command::new("umount").arg(&self.export).status();
        }
    }
}
