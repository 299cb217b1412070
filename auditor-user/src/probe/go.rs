//! Attaching a Go [`ProbePlan`] to one process: the per-target
//! configuration goes into a free slot of `GO_TARGETS`, then one uprobe per
//! site, each with a cookie saying what the site is and which slot
//! configures it.

use std::{collections::BTreeSet, num::NonZeroU32};

use auditor_common::go_map::{
    ESCALATED_MAP, GoTargetConfig, MAP_STATE_MAP, MapKey, MapState, PAIRS_MAP, PID_LOSSES_MAP,
    PairKey, PairSeen, PidLosses, SiteKey, TARGET_SLOTS, TARGETS_MAP, cookie, mode,
};
use aya::{
    Ebpf,
    maps::{Array, HashMap},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};

use super::{
    ProbeError,
    multi::{MultiLink, MultiProgram},
};
use crate::{
    goexe::{CallSite, ProbePlan, ProbeSite},
    settings::{AccessStream, DetectMode},
};

/// Name of the uprobe program in the object.
pub const GO_PROGRAM: &str = "go_map_probe";

/// A site the kernel accepted.
#[derive(Debug)]
pub struct AttachedSite {
    pub site: ProbeSite,
}

/// How a target's probes are held in the kernel.
#[derive(Debug)]
enum Links {
    /// One `uprobe_multi` link for every site: removed at once. `None`
    /// while a sampling window is closed (`--max-overhead`).
    Multi(Option<MultiLink>),
    /// One perf link per site (kernels before 6.6, or when the multi link
    /// was refused): removed one by one, ~80 ms each; by site id.
    PerSite(Vec<(u16, UProbeLinkId)>),
}

/// Probes attached to one Go process.
#[derive(Debug)]
pub struct GoAttachment {
    pub pid: u32,
    pub attached: Vec<AttachedSite>,
    /// Sites the kernel refused, with its error.
    pub failed: Vec<FailedSite>,
    /// This target's slot in `GO_TARGETS` (carried in every cookie).
    slot: u32,
    links: Links,
    /// Escalated call sites, placed one by one after the attach; each may
    /// be parked (its probe removed) and armed again.
    escalated: Vec<EscalatedExit>,
    /// The kernel's goroutine cache generation for this target
    /// (`GoTargetConfig::gcache`): non-zero while the plan's
    /// goroutine-change probes are all placed.
    gcache: u64,
    /// Sites of the plan detached to keep within an overhead budget (by
    /// site id): left out of every link placed until they are widened.
    narrowed: BTreeSet<u16>,
}

/// The exit probe of one escalated call site.
#[derive(Debug)]
struct EscalatedExit {
    file_offset: u64,
    cookie: u64,
    /// Attached now (armed), or `None` while parked.
    link: Option<UProbeLinkId>,
}

/// An escalated exit probe taken out of its program: dropping it removes
/// the probe, which waits for a grace period, so callers drop it off the
/// thread that reads events.
pub type ParkedLink = aya::programs::uprobe::UProbeLink;

/// Load the program and, where the kernel allows it, its `uprobe_multi`
/// copy; the error says why every target will use one link per site.
pub fn load_programs(ebpf: &mut Ebpf) -> Result<Result<MultiProgram, String>, ProbeError> {
    let prog = program(ebpf)?;
    Ok(MultiProgram::load(prog, GO_PROGRAM))
}

/// A site the kernel refused, with the kernel's error (errno kept).
#[derive(Debug)]
pub struct FailedSite {
    pub site: ProbeSite,
    pub error: aya::programs::ProgramError,
}

fn program(ebpf: &mut Ebpf) -> Result<&mut UProbe, ProbeError> {
    let prog: &mut UProbe = super::program_mut(ebpf, GO_PROGRAM)?;
    if prog.fd().is_err() {
        prog.load().map_err(|source| ProbeError::Program {
            name: GO_PROGRAM,
            source: Box::new(source),
        })?;
    }
    Ok(prog)
}

/// The attach cookie for a site of the target in `slot` (layout in
/// `auditor_common::go_map::cookie`).
pub fn site_cookie(site: &ProbeSite, slot: u32) -> u64 {
    let mut flags = 0;
    if site.exit {
        flags |= cookie::EXIT;
    }
    if site.stackcheck {
        flags |= cookie::STACKCHECK;
    }
    if site.fatal {
        flags |= cookie::FATAL;
    }
    if site.g_change {
        flags |= cookie::G_CHANGE;
    }
    if site.nested_callee {
        flags |= cookie::NESTED;
    }
    if site.call_site.is_some() {
        // A scoped plan's entry is the call instruction; its exit (a
        // `make`'s result) is the return address in the caller.
        flags |= if site.exit {
            cookie::CALLSITE
        } else {
            cookie::CALL_INSN
        };
    }
    cookie::with_target_slot(
        cookie::encode(site.op as u8, site.id, flags, site.map_arg as u8),
        slot,
    )
}

/// Take a free slot of `GO_TARGETS` for `pid` and write its configuration
/// there.
fn claim_slot(ebpf: &mut Ebpf, pid: u32, mut config: GoTargetConfig) -> Result<u32, ProbeError> {
    let mut targets: Array<_, GoTargetConfig> = super::map_mut(ebpf, TARGETS_MAP)?;
    let map_err = |source| ProbeError::Map {
        name: TARGETS_MAP,
        source: Box::new(source),
    };
    let mut free = None;
    for slot in 0..TARGET_SLOTS {
        let cfg = targets.get(&slot, 0).map_err(map_err)?;
        if cfg.pid == pid {
            // Left by a detach that failed half-way: reuse it.
            free = Some(slot);
            break;
        }
        if cfg.pid == 0 && free.is_none() {
            free = Some(slot);
        }
    }
    let slot = free.ok_or(ProbeError::TooManyTargets(TARGET_SLOTS))?;
    config.pid = pid;
    targets.set(slot, config, 0).map_err(map_err)?;
    Ok(slot)
}

/// Clear a target's slot of `GO_TARGETS`: its probes find no
/// configuration there any more.
fn release_slot(ebpf: &mut Ebpf, slot: u32) {
    if let Some(map) = ebpf.map_mut(TARGETS_MAP)
        && let Ok(mut targets) = Array::<_, GoTargetConfig>::try_from(map)
    {
        let _ = targets.set(slot, GoTargetConfig::default(), 0);
    }
}

/// A random value for [`GoTargetConfig::salt`] (std's hasher keys are
/// drawn from the OS per `RandomState`).
pub fn fresh_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// Configure the kernel for `pid` and attach every site of `plan`.
///
/// Individual sites the kernel refuses are collected in `failed`; the call
/// fails only when no site at all could be attached.
pub fn attach(
    ebpf: &mut Ebpf,
    pid: u32,
    plan: &ProbePlan,
    config: GoTargetConfig,
    multi: Option<&MultiProgram>,
) -> Result<GoAttachment, ProbeError> {
    let nz = NonZeroU32::new(pid).ok_or(ProbeError::PidZero)?;
    let slot = claim_slot(ebpf, pid, config)?;
    let out = attach_sites(ebpf, nz, slot, plan, multi);
    match out {
        Ok(mut att) => {
            // Only now that the goroutine-change probes are in place may
            // the kernel trust what it caches of `g`.
            att.renew_gcache(plan);
            if att.gcache != 0 {
                att.set_config(ebpf, config)?;
            }
            Ok(att)
        }
        Err(e) => {
            release_slot(ebpf, slot);
            Err(e)
        }
    }
}

fn attach_sites(
    ebpf: &mut Ebpf,
    nz: NonZeroU32,
    slot: u32,
    plan: &ProbePlan,
    multi: Option<&MultiProgram>,
) -> Result<GoAttachment, ProbeError> {
    let pid = nz.get();
    if let Some(multi) = multi
        && !plan.sites.is_empty()
    {
        let sites = multi_sites(plan, slot, &BTreeSet::new());
        // All or nothing: when the kernel refuses one site, the per-site
        // path below finds which and attaches the others.
        if let Ok(link) = multi.attach(&plan.exe, pid, &sites) {
            return Ok(GoAttachment {
                pid,
                attached: plan
                    .sites
                    .iter()
                    .map(|s| AttachedSite { site: s.clone() })
                    .collect(),
                failed: Vec::new(),
                slot,
                links: Links::Multi(Some(link)),
                escalated: Vec::new(),
                gcache: 0,
                narrowed: BTreeSet::new(),
            });
        }
    }
    let prog = program(ebpf)?;
    let mut out = GoAttachment {
        pid,
        attached: Vec::new(),
        failed: Vec::new(),
        slot,
        links: Links::PerSite(Vec::new()),
        escalated: Vec::new(),
        gcache: 0,
        narrowed: BTreeSet::new(),
    };
    let mut links = Vec::new();
    for site in &plan.sites {
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(site.file_offset),
            cookie: Some(site_cookie(site, slot)),
        };
        match prog.attach(point, &plan.exe, UProbeScope::OneProcess(nz)) {
            Ok(link) => {
                links.push((site.id, link));
                out.attached.push(AttachedSite { site: site.clone() })
            }
            Err(error) => out.failed.push(FailedSite {
                site: site.clone(),
                error,
            }),
        }
    }
    out.links = Links::PerSite(links);
    if out.attached.is_empty()
        && let Some(FailedSite { site, error }) = out.failed.drain(..).next()
    {
        return Err(ProbeError::Attach {
            function: site.function,
            exe: plan.exe.display().to_string(),
            offset: site.file_offset,
            source: Box::new(error),
        });
    }
    Ok(out)
}

/// Every site of `plan` not narrowed as (file offset, cookie), for one
/// multi link.
fn multi_sites(plan: &ProbePlan, slot: u32, narrowed: &BTreeSet<u16>) -> Vec<(u64, u64)> {
    plan.sites
        .iter()
        .filter(|s| !narrowed.contains(&s.id))
        .map(|s| (s.file_offset, site_cookie(s, slot)))
        .collect()
}

/// The kernel's configuration for one target (`GO_TARGETS[pid]`): where the
/// runtime keeps what the probe reads, and what it is asked to do.
pub fn target_config(
    plan: &ProbePlan,
    detect: DetectMode,
    stack_depth: u32,
    accesses: AccessStream,
    bias: u64,
) -> GoTargetConfig {
    // Sorted: the kernel looks a return address up by binary search.
    let mut rets: Vec<u64> = plan
        .nested_rets
        .iter()
        .map(|r| r.wrapping_add(bias))
        .collect();
    rets.sort_unstable();
    rets.dedup();
    rets.truncate(auditor_common::go_map::NESTED_RETS);
    let mut nested_rets = [0u64; auditor_common::go_map::NESTED_RETS];
    nested_rets[..rets.len()].copy_from_slice(&rets);
    let watched = &plan.watched_globals.vars;
    let mut map_globals = [0u64; auditor_common::go_map::MAP_GLOBALS];
    for (slot, (addr, _)) in map_globals.iter_mut().zip(watched) {
        *slot = addr.wrapping_add(bias);
    }
    GoTargetConfig {
        goid_off: plan.offsets.goid,
        writing_off: plan.offsets.writing,
        writing_mask: plan.offsets.writing_mask as u32,
        iter_map_off: plan.offsets.iter_map,
        mode: match detect {
            DetectMode::Entry => mode::ENTRY,
            DetectMode::Interval => mode::INTERVAL,
        },
        stack_depth,
        emit_access: accesses.kernel_value(),
        seed_off: crate::goexe::offsets::seed_offset(plan.swiss_maps),
        // Interval mode probes every RET already.
        escalate: (detect == DetectMode::Entry) as u32,
        paused: 0,
        nested_rets,
        // Set when a slot is claimed.
        pid: 0,
        nested_len: rets.len() as u32,
        salt: fresh_salt(),
        // Set once the goroutine-change probes are attached.
        gcache: 0,
        map_globals,
        map_globals_len: watched.len().min(auditor_common::go_map::MAP_GLOBALS) as u32,
        _pad_globals: 0,
    }
}

impl GoAttachment {
    /// Replace the kernel's configuration of this target (in its slot):
    /// the next probe hit reads the new one.
    pub fn set_config(
        &self,
        ebpf: &mut Ebpf,
        mut config: GoTargetConfig,
    ) -> Result<(), ProbeError> {
        let mut targets: Array<_, GoTargetConfig> = super::map_mut(ebpf, TARGETS_MAP)?;
        config.pid = self.pid;
        config.gcache = self.gcache;
        targets
            .set(self.slot, config, 0)
            .map_err(|source| ProbeError::Map {
                name: TARGETS_MAP,
                source: Box::new(source),
            })
    }

    /// A new goroutine cache generation when every goroutine-change probe
    /// of `plan` is attached (entries cached before are no longer
    /// trusted), else none. The next [`Self::set_config`] hands it to the
    /// kernel.
    fn renew_gcache(&mut self, plan: &ProbePlan) {
        let hooks = plan.sites.iter().filter(|s| s.g_change).count();
        let placed = self.attached.iter().filter(|a| a.site.g_change).count();
        self.gcache = if hooks > 0 && placed == hooks && self.placed() {
            fresh_salt() | 1
        } else {
            0
        };
    }

    /// Whether the plan's probes are in the kernel (not removed for a
    /// closed sampling window).
    fn placed(&self) -> bool {
        !matches!(self.links, Links::Multi(None))
    }

    /// Whether every site is held by one `uprobe_multi` link.
    pub fn is_multi(&self) -> bool {
        matches!(self.links, Links::Multi(_))
    }

    /// Remove the plan's probes for a closed sampling window, keeping the
    /// attachment (one link: removed with one grace period). False when the
    /// sites are held one link each: the window is then closed by the
    /// configuration's `paused` flag alone. Escalated exits are parked by
    /// the engine ([`Self::park_exit`]).
    pub fn suspend(&mut self) -> bool {
        match &mut self.links {
            Links::Multi(link) => {
                if let Some(l) = link.take() {
                    l.detach();
                }
                // Goroutines may exit unseen until the probes return.
                self.gcache = 0;
                true
            }
            Links::PerSite(_) => false,
        }
    }

    /// Place the plan's probes again after [`Self::suspend`].
    pub fn resume(&mut self, multi: &MultiProgram, plan: &ProbePlan) -> Result<(), String> {
        if let Links::Multi(None) = &self.links {
            self.place_multi(multi, plan)?;
        }
        Ok(())
    }

    /// Attach the multi link anew with every site not narrowed, and renew
    /// the goroutine cache generation for it.
    fn place_multi(&mut self, multi: &MultiProgram, plan: &ProbePlan) -> Result<(), String> {
        let link = multi
            .attach(
                &plan.exe,
                self.pid,
                &multi_sites(plan, self.slot, &self.narrowed),
            )
            .map_err(|e| format!("cannot place the probes again: {e}"))?;
        self.links = Links::Multi(Some(link));
        self.renew_gcache(plan);
        Ok(())
    }

    /// Whether the plan's site `id` is detached by [`Self::narrow`].
    pub fn is_narrowed(&self, id: u16) -> bool {
        self.narrowed.contains(&id)
    }

    /// Detach the plan's sites in `narrowed` and attach any other site
    /// detached before (an overhead budget's scope step). The runtime hooks
    /// (fatal error, goroutine change) are never detached.
    ///
    /// With one multi link, the link is replaced: the caller pauses the
    /// target first, and afterwards writes the configuration with a fresh
    /// salt (entries were missed while no probe was placed) and the new
    /// goroutine cache generation this renews. While a sampling window has
    /// the link removed, only the set changes; [`Self::resume`] places it.
    /// With one link per site, only the sites that change are detached or
    /// attached (the others never miss a hit).
    pub fn narrow(
        &mut self,
        ebpf: &mut Ebpf,
        multi: Option<&MultiProgram>,
        plan: &ProbePlan,
        narrowed: &BTreeSet<u16>,
    ) -> Result<(), String> {
        let hook = |id: &u16| {
            plan.sites
                .get(usize::from(*id))
                .is_some_and(|s| s.fatal || s.g_change)
        };
        let next: BTreeSet<u16> = narrowed.iter().copied().filter(|id| !hook(id)).collect();
        if next == self.narrowed {
            return Ok(());
        }
        let before = std::mem::replace(&mut self.narrowed, next);
        match &mut self.links {
            Links::Multi(None) => Ok(()),
            Links::Multi(link @ Some(_)) => {
                if let Some(l) = link.take() {
                    l.detach();
                }
                self.gcache = 0;
                let multi = multi.ok_or("no uprobe_multi program to place the probes with")?;
                self.place_multi(multi, plan)
            }
            Links::PerSite(links) => {
                let nz = NonZeroU32::new(self.pid).ok_or("pid 0")?;
                let prog = program(ebpf).map_err(|e| e.to_string())?;
                let mut errors = Vec::new();
                for id in self.narrowed.difference(&before) {
                    if let Some(i) = links.iter().position(|(s, _)| s == id) {
                        let (_, link) = links.swap_remove(i);
                        if let Err(e) = prog.detach(link) {
                            errors.push(format!("site {id}: {e}"));
                        }
                    }
                }
                for id in before.difference(&self.narrowed) {
                    let Some(site) = plan.sites.get(usize::from(*id)) else {
                        continue;
                    };
                    let point = UProbeAttachPoint {
                        location: UProbeAttachLocation::AbsoluteOffset(site.file_offset),
                        cookie: Some(site_cookie(site, self.slot)),
                    };
                    match prog.attach(point, &plan.exe, UProbeScope::OneProcess(nz)) {
                        Ok(link) => links.push((*id, link)),
                        Err(e) => errors.push(format!("site {id}: {e}")),
                    }
                }
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(errors.join("; "))
                }
            }
        }
    }

    /// Place one more site on this process (an escalated call site), armed
    /// unless `armed` is false; its index for [`Self::arm_exit`] and
    /// [`Self::park_exit`]. A site the kernel single-steps counts its hits
    /// ([`Self::stepped_exit_hits`]).
    pub fn attach_site(
        &mut self,
        ebpf: &mut Ebpf,
        exe: &std::path::Path,
        call: &CallSite,
        armed: bool,
    ) -> Result<usize, String> {
        let site = &call.site;
        let delta = u8::try_from(site.addr.wrapping_sub(call.ret_addr)).map_err(|_| {
            format!(
                "exit probe {:#x} too far past {:#x}",
                site.addr, call.ret_addr
            )
        })?;
        let mut flags = cookie::EXIT | cookie::CALLSITE;
        if site.stackcheck {
            flags |= cookie::STACKCHECK;
        }
        if !site.emulated {
            flags |= cookie::STEPPED;
        }
        let mut exit = EscalatedExit {
            file_offset: site.file_offset,
            cookie: cookie::with_exit_delta(
                cookie::with_target_slot(
                    cookie::encode(site.op as u8, site.id, flags, site.map_arg as u8),
                    self.slot,
                ),
                delta,
            ),
            link: None,
        };
        if armed {
            exit.link = Some(self.place_exit(ebpf, exe, &exit)?);
        }
        self.attached.push(AttachedSite { site: site.clone() });
        self.escalated.push(exit);
        Ok(self.escalated.len() - 1)
    }

    fn place_exit(
        &self,
        ebpf: &mut Ebpf,
        exe: &std::path::Path,
        exit: &EscalatedExit,
    ) -> Result<UProbeLinkId, String> {
        let nz = NonZeroU32::new(self.pid).ok_or("pid 0")?;
        let prog = program(ebpf).map_err(|e| e.to_string())?;
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(exit.file_offset),
            cookie: Some(exit.cookie),
        };
        prog.attach(point, exe, UProbeScope::OneProcess(nz))
            .map_err(|e| e.to_string())
    }

    /// Attach a parked escalated exit again (nothing when it is armed).
    pub fn arm_exit(
        &mut self,
        ebpf: &mut Ebpf,
        exe: &std::path::Path,
        index: usize,
    ) -> Result<(), String> {
        let Some(exit) = self.escalated.get(index) else {
            return Err(format!("no escalated exit {index}"));
        };
        if exit.link.is_some() {
            return Ok(());
        }
        let link = self.place_exit(ebpf, exe, exit)?;
        self.escalated[index].link = Some(link);
        Ok(())
    }

    /// Take an armed escalated exit's probe out of the program, for the
    /// caller to drop (which removes it) off the event path. `None` when
    /// it was parked already.
    pub fn park_exit(&mut self, ebpf: &mut Ebpf, index: usize) -> Option<ParkedLink> {
        let id = self.escalated.get_mut(index)?.link.take()?;
        program(ebpf).ok()?.take_link(id).ok()
    }

    /// Hits of a single-stepped escalated exit so far, counted by the
    /// kernel in its `GO_ESCALATED` entry (`ret`: the call's return address
    /// as the process runs it). An entry the table (an LRU) evicted is put
    /// back at 0, so counting goes on.
    pub fn stepped_exit_hits(&self, ebpf: &mut Ebpf, ret: u64) -> Option<u64> {
        let mut table = HashMap::<_, SiteKey, u64>::try_from(ebpf.map_mut(ESCALATED_MAP)?).ok()?;
        let key = SiteKey {
            pid: self.pid,
            _pad: 0,
            ret,
        };
        match table.get(&key, 0) {
            Ok(n) => Some(n),
            Err(_) => {
                table.insert(key, 0, 0).ok()?;
                Some(0)
            }
        }
    }

    /// Remove every probe of this process and forget its kernel state.
    pub fn detach(self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        if self.escalated.iter().any(|e| e.link.is_some()) {
            let prog = program(ebpf)?;
            for link in self.escalated.into_iter().filter_map(|e| e.link) {
                let _ = prog.detach(link);
            }
        }
        match self.links {
            Links::Multi(link) => {
                if let Some(l) = link {
                    l.detach();
                }
            }
            Links::PerSite(links) => {
                let prog = program(ebpf)?;
                for (_, link) in links {
                    // A link of an exited process may already be gone; that is fine.
                    let _ = prog.detach(link);
                }
            }
        }
        release_slot(ebpf, self.slot);
        forget_pid::<MapState>(ebpf, MAP_STATE_MAP, self.pid);
        // GO_CURRENT needs no clearing: the next target's salt differs.
        forget_where::<SiteKey, u64>(ebpf, ESCALATED_MAP, |k| k.pid == self.pid);
        forget_where::<PairKey, PairSeen>(ebpf, PAIRS_MAP, |k| k.pid == self.pid);

        Ok(())
    }
}

/// Forget the per-process loss counters of `pid` (after they were read:
/// the caller attributes the last losses first).
pub fn forget_losses(ebpf: &mut Ebpf, pid: u32) {
    if let Some(map) = ebpf.map_mut(PID_LOSSES_MAP)
        && let Ok(mut losses) = HashMap::<_, u32, PidLosses>::try_from(map)
    {
        let _ = losses.remove(&pid);
    }
}

/// Remove every entry of `pid` from a per-process kernel table (keyed by
/// [`MapKey`]), so a detached target leaves no state behind.
fn forget_pid<V: aya::Pod>(ebpf: &mut Ebpf, name: &str, pid: u32) {
    forget_where::<MapKey, V>(ebpf, name, |k| k.pid == pid);
}

/// Remove the entries of a kernel hash table whose key matches.
fn forget_where<K: aya::Pod, V: aya::Pod>(ebpf: &mut Ebpf, name: &str, pick: impl Fn(&K) -> bool) {
    let Some(map) = ebpf.map_mut(name) else {
        return;
    };
    let Ok(mut table) = HashMap::<_, K, V>::try_from(map) else {
        return;
    };
    let keys: Vec<K> = table
        .keys()
        .filter_map(Result::ok)
        .filter(|k| pick(k))
        .collect();
    for k in keys {
        let _ = table.remove(&k);
    }
}
