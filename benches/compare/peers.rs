//! Peers for the comparison harness (etcd, Redis, PostgreSQL, tsoracle): the agreed API as a
//! stub until the implementation lands; every peer reports itself skipped.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    Etcd,
    RedisAlways,
    RedisEverysec,
    Postgres,
    Tsoracle,
}

impl PeerKind {
    pub const ALL: [PeerKind; 5] = [
        PeerKind::Etcd,
        PeerKind::RedisAlways,
        PeerKind::RedisEverysec,
        PeerKind::Postgres,
        PeerKind::Tsoracle,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PeerKind::Etcd => "etcd",
            PeerKind::RedisAlways => "redis-always",
            PeerKind::RedisEverysec => "redis-everysec",
            PeerKind::Postgres => "postgres",
            PeerKind::Tsoracle => "tsoracle",
        }
    }
}

pub struct PeerProcess {
    pub name: String,
    pub durability: String,
    pub pids: Vec<u32>,
}

#[async_trait::async_trait]
pub trait PeerConn: Send {
    async fn next(&mut self) -> anyhow::Result<i64>;
}

pub async fn start(kind: PeerKind) -> anyhow::Result<PeerProcess> {
    anyhow::bail!("{}: not implemented yet", kind.label())
}

pub async fn connect(_peer: &PeerProcess) -> anyhow::Result<Box<dyn PeerConn>> {
    anyhow::bail!("not implemented yet")
}

pub fn probe() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
