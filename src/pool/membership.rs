//! Membership: members joining a running pool, superblocks kept current,
//! the set of members holding metadata replicas.

use super::*;

impl Pool {
    /// Join `disk` (empty, unformatted) to the running pool as a new
    /// member, online at once; returns its index. Protocol (each step
    /// durable before the next):
    /// 1. the new member's superblock, listing it at the next free index;
    /// 2. every present member's superblock, rewritten with the longer list;
    /// 3. the slot is filled and published: placement sees it from now on.
    ///
    /// A crash after 1 leaves the new member's list the longest: mounted
    /// with it, the pool includes it (still empty); mounted without it,
    /// the pool is as before, and the half-added directory is refused with
    /// a message if it shows up later with a conflicting slot. A member
    /// whose superblock could not be rewritten in 2 is brought up to date
    /// at the next mount ([`Pool::refresh_superblocks`]).
    pub fn add_member(
        &self,
        disk: Arc<dyn DiskBackend>,
        path: String,
        domain: Option<String>,
        class: Option<String>,
    ) -> Result<u16, PoolError> {
        if let Some(c) = &class {
            if !format::valid_class(c) {
                return Err(PoolError::Setup(format!(
                    "--class {c:?}: 1 to 32 letters, digits, '-' or '_' (e.g. ssd, hdd)"
                )));
            }
        }
        let _g = self.add_lock.lock().unwrap();
        let n = self.members().len();
        if n >= MAX_MEMBERS {
            return Err(PoolError::Setup(format!(
                "the pool already has {MAX_MEMBERS} members, the most it can have"
            )));
        }
        if disk.read_file(SUPERBLOCK_FILE).is_ok() {
            return Err(PoolError::Setup(format!(
                "{path} is already a shardfs member: remove its contents first if you mean to reuse it"
            )));
        }
        let declared = self.members().iter().any(|m| m.domain().is_some());
        let domains: Vec<String> = match (&domain, declared) {
            (Some(d), _) if d.is_empty() || d.len() > 64 || d.contains(',') => {
                return Err(PoolError::Setup(format!(
                    "--domain {d:?}: a failure domain name has 1 to 64 characters and no comma"
                )))
            }
            (None, true) => {
                return Err(PoolError::Setup(
                    "this pool declares a failure domain for every member: give --domain".into(),
                ))
            }
            (Some(d), false) if n > 0 => {
                return Err(PoolError::Setup(format!(
                    "--domain {d}: this pool declares no failure domains (set them at mkfs), \
                     so the new member cannot declare one"
                )))
            }
            (Some(d), _) => self
                .members()
                .iter()
                .map(|m| m.domain().unwrap_or_default().to_string())
                .chain([d.clone()])
                .collect(),
            (None, false) => Vec::new(),
        };
        let id = new_id();
        let mut sb = self.current_superblock();
        sb.members.push(id.clone());
        sb.domains = domains;
        if class.is_some() || !sb.classes.is_empty() {
            sb.classes.resize(n, String::new());
            sb.classes.push(class.clone().unwrap_or_default());
        }
        sb.member_id = id.clone();
        sb.member_index = n as u16;
        format::format_disk(disk.as_ref(), &sb)
            .map_err(|e| PoolError::Setup(format!("{path}: formatting the new member: {e}")))?;
        self.write_superblocks(&sb);
        let m = &self.slots[n];
        m.id.set(id).expect("unused slot");
        m.path.set(path.clone()).expect("unused slot");
        if let Some(d) = domain {
            m.set_domain(d);
        }
        if let Some(c) = class {
            m.set_class(c);
        }
        m.attach_disk(disk);
        m.state.store(Health::Online as u8, Ordering::Relaxed);
        if let Some(d) = m.disk() {
            if let Ok((t, f)) = d.capacity() {
                m.total.store(t, Ordering::Relaxed);
                m.free.store(f, Ordering::Relaxed);
            }
        }
        self.count.store(n + 1, Ordering::Release);
        log::warn!("member {n} ({path}) added to the pool; new stripes use it, rebalance moves data onto it");
        Ok(n as u16)
    }

    /// Rewrite every present member's superblock from `newest` (the pool's
    /// current member list) where it differs; failures are logged and left
    /// for the next mount.
    fn write_superblocks(&self, newest: &Superblock) {
        for m in self.members() {
            let Some(d) = m.disk() else { continue };
            let mut sb = newest.clone();
            sb.member_id = m.id().to_string();
            sb.member_index = m.index;
            let current = d
                .read_file(SUPERBLOCK_FILE)
                .ok()
                .and_then(|b| Superblock::decode(&b).ok());
            if current.as_ref() == Some(&sb) {
                continue;
            }
            if current.is_some_and(|c| c.pool_id != sb.pool_id || c.member_id != sb.member_id) {
                continue; // not ours any more: leave it alone
            }
            if let Err(e) = d.write_atomic(SUPERBLOCK_FILE, &sb.encode()) {
                m.note_error(&format!("updating the superblock's member list: {e}"));
            }
        }
    }

    /// The superblock as it should now read (member-specific fields are
    /// the first member's): current member list, domains and metadata set.
    fn current_superblock(&self) -> Superblock {
        let mut sb = self.sb.clone();
        // a version 1 pool becomes version 2 here (see MIN_FORMAT_VERSION)
        sb.format_version = FORMAT_VERSION;
        sb.members = self.members().iter().map(|m| m.id().to_string()).collect();
        let declared = self.members().iter().any(|m| m.domain().is_some());
        sb.domains = if declared {
            self.members()
                .iter()
                .map(|m| m.domain().unwrap_or_default().to_string())
                .collect()
        } else {
            Vec::new()
        };
        sb.classes = if self.members().iter().any(|m| m.class().is_some()) {
            self.members()
                .iter()
                .map(|m| m.class().unwrap_or_default().to_string())
                .collect()
        } else {
            Vec::new()
        };
        let (epoch, set) = self.meta_set.lock().unwrap().clone();
        sb.meta_epoch = epoch;
        sb.meta_replicas = set;
        sb
    }

    /// Bring every present member's superblock up to the pool's member
    /// list and metadata set (a member that missed a `disk add` or a
    /// replica move, or was absent then).
    pub fn refresh_superblocks(&self) {
        let _g = self.add_lock.lock().unwrap();
        self.write_superblocks(&self.current_superblock());
    }

    /// Members holding metadata replicas.
    pub fn meta_replicas(&self) -> Vec<u16> {
        self.meta_set.lock().unwrap().1.clone()
    }

    /// Record a new metadata replica set in every present member's
    /// superblock (epoch + 1); a member that cannot be written is brought
    /// up to date at a later mount.
    pub fn set_meta_replicas(&self, set: Vec<u16>) {
        let _g = self.add_lock.lock().unwrap();
        // the superblocks first, then the in-memory set that status shows:
        // whoever sees the new set finds it on the members too (a test
        // that read the superblocks right after status changed saw the
        // old epoch on a loaded machine)
        let mut sb = self.current_superblock();
        sb.meta_epoch += 1;
        sb.meta_replicas = set.clone();
        self.write_superblocks(&sb);
        *self.meta_set.lock().unwrap() = (sb.meta_epoch, set);
    }
}
