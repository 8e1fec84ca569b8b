//! The supervisor's event loop: slots, worker lifecycles, signals, timers.
//!
//! Everything runs on one current-thread task, so the state below needs no
//! locks. Between fork and exec only fd set-up runs (see [`crate::spawn`]).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{error, info, warn};

use drover_protocol::channel::{SupervisorMessage, WorkerMessage};
use drover_protocol::ctl::{Answer, Phase, Reply, Request, Status, WorkerState};
use drover_protocol::handover::FdName;
use drover_protocol::limits::Limits;

use crate::control::ControlSocket;
use crate::metrics::{MetricsClient, SlotMetrics, Snapshot, Totals};
use crate::notify::Notifier;
use crate::relay::{PublishId, Relay, PUBLISH_TIMEOUT};
use crate::report::{self, rss_bytes, RateMeter};
use crate::rollout::{self, Next, Rollout};
use crate::scaling::{self, Plan};
use crate::signal::{Signal, Signals};
use crate::slots::{Backoff, Slot, SlotId, CRASH_LOOP_WINDOW};
use crate::socket::SlotSockets;
use crate::spawn::{self, WorkerCommand};
use crate::upgrade::{self, Upgrade};
use crate::watch::{self, describe, watch_successor, Command, Event, SuccessorEvent, WorkerId};
use crate::workers::WorkerHandle;

/// Exit codes a worker uses to say "retrying cannot help": EX_USAGE (64) and
/// EX_CONFIG (78). Seen while booting, they stop the supervisor with the same
/// code instead of a crash loop.
const FATAL_EXIT_CODES: [i32; 2] = [64, 78];

/// How long past `drain_timeout` a draining worker may take to exit on its own
/// before it is killed: it enforces the drain timeout itself, and this slack
/// only covers its exit.
const DRAIN_KILL_SLACK: Duration = Duration::from_secs(1);

/// Extra time a retiring worker gets on top of the drain timeout: it first
/// sweeps its accept queue (up to 5 s).
const RETIRE_SLACK: Duration = Duration::from_secs(5);

/// How the supervisor runs its workers. Serializable, because `drover serve`
/// hands it to the `drover-supervisor` process it execs into.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Options {
    pub command: WorkerCommand,
    /// Number of worker slots.
    pub workers: usize,
    /// What to exec for a job process: a worker with no socket, run, watched
    /// and rolled like the HTTP workers. None: no job processes.
    #[serde(default)]
    pub jobs_command: Option<WorkerCommand>,
    /// Job process slots.
    #[serde(default)]
    pub job_workers: usize,
    /// A worker that has not reported ready by then is killed and retried.
    pub boot_timeout: Duration,
    /// A draining worker still alive after this (plus a small slack) is killed.
    pub drain_timeout: Duration,
    /// First delay before a crashed worker is restarted; doubles per crash.
    pub backoff_min: Duration,
    /// Cap on that delay. A worker that lived longer than this resets it.
    pub backoff_max: Duration,
    /// Where to write `{"pid":..,"listen":[..]}` once every worker is ready.
    pub ready_file: Option<PathBuf>,
    /// A ready worker whose event loop has sent no heartbeat for this long
    /// is stalled: it is killed and replaced.
    pub stall_timeout: Duration,
    /// Recycle a worker (start-before-stop) after this many requests, plus
    /// a random share of `max_requests_jitter` so workers do not all recycle
    /// at once. 0: never.
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    /// Recycle a worker whose resident memory exceeds this many bytes.
    /// 0: never.
    pub max_rss: u64,
    /// Where `drover ctl` reaches the supervisor; `None` for no socket.
    pub control_socket: Option<PathBuf>,
    /// More fields for the ready file, such as the admin listener's address.
    pub ready_extra: Vec<(String, String)>,
    /// The application's own listeners, handed to a successor on upgrade
    /// (the admin listener), by name.
    pub handover_extra: Vec<(FdName, std::os::fd::RawFd)>,
}

/// How the supervisor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every worker drained after a stop signal.
    Drained,
    /// A second stop signal killed the workers without waiting.
    StoppedAtOnce,
    /// A new supervisor took over (upgrade); this one drained and left.
    Upgraded,
    /// A worker failed to boot with an exit code that says retrying is
    /// pointless (bad configuration); the supervisor exits with it.
    WorkerFatal(i32),
}

/// The process supervisor. Build it with [`Supervisor::bind`], then
/// [`Supervisor::run`] it on a current-thread runtime.
pub struct Supervisor {
    options: Options,
    sockets: SlotSockets,
    slots: Vec<Slot>,
    /// Job process slots: no sockets, never scaled.
    job_slots: Vec<Slot>,
    workers: BTreeMap<WorkerId, WorkerHandle>,
    next_id: WorkerId,
    generation: u64,
    phase: Phase,
    /// A rolling restart or recycle in progress.
    reload: Option<Rollout>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    /// Set when a worker failed to boot for good.
    fatal: Option<i32>,
    /// Publishes relayed between workers.
    relay: Relay,
    /// The host-wide rate limits the workers ask about.
    limits: Limits,
    /// Slots waiting to be recycled (max requests, max RSS), with why.
    recycle_queue: VecDeque<(SlotId, &'static str)>,
    notifier: Notifier,
    /// The request rate in the status line.
    rate: RateMeter,
    /// A steering program is attached to the reuseport groups (after a
    /// scale-down); it must follow every change of the slot count.
    steering: bool,
    /// The sockets are drover's own (not passed by systemd): keep them in
    /// systemd's fd store, in step with the slots.
    store_sockets: bool,
    /// Per slot, the counters of its workers that have exited.
    retired: Vec<Totals>,
    /// The same per job slot.
    retired_jobs: Vec<Totals>,
    /// Totals of slots removed by scaling down.
    removed: Totals,
    metrics_tx: mpsc::UnboundedSender<oneshot::Sender<Snapshot>>,
    metrics_rx: mpsc::UnboundedReceiver<oneshot::Sender<Snapshot>>,
    /// From a predecessor (upgrade): its control socket, to serve on.
    inherited_control: Option<std::os::unix::net::UnixListener>,
    /// From a predecessor: where to say "ready" once every worker is.
    predecessor: Option<std::os::unix::net::UnixStream>,
    /// Our control socket, to hand to a successor.
    control_fd: Option<std::os::fd::RawFd>,
    /// An upgrade in progress. Once its successor took over, on exit leave
    /// the ready file and control socket (now its) alone.
    upgrade: Option<Upgrade>,
}

impl Supervisor {
    /// Binds every slot's sockets. Nothing is started yet.
    /// Uses the sockets systemd passed, if any (socket activation), else
    /// binds `listen`.
    pub fn bind(options: Options, listen: &[SocketAddr]) -> io::Result<Self> {
        let passed = crate::activation::inherited_listeners()?;
        let store_sockets = passed.is_empty();
        let sockets = if passed.is_empty() {
            SlotSockets::bind(listen, options.workers, crate::socket::DEFAULT_BACKLOG)?
        } else {
            info!(
                sockets = passed.len(),
                "using the listening sockets passed by systemd; server.listen is ignored"
            );
            SlotSockets::adopt(passed, options.workers, crate::socket::DEFAULT_BACKLOG)?
        };
        Ok(Self::with_sockets(options, sockets, store_sockets))
    }

    /// Takes over from a supervisor being upgraded: its sockets (one slot
    /// each, so the same number of workers), control socket, generation and
    /// handshake channel.
    pub fn adopt(mut options: Options, handover: crate::activation::Handover) -> io::Result<Self> {
        let addrs: std::collections::HashSet<SocketAddr> =
            handover.listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
        let slots = handover.listeners.len() / addrs.len().max(1);
        if slots == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the upgrade passed no listening socket",
            ));
        }
        options.workers = slots;
        let sockets = SlotSockets::adopt(handover.listeners, slots, crate::socket::DEFAULT_BACKLOG)?;
        info!(slots, generation = handover.generation, "taking over from the previous supervisor");
        let mut supervisor = Self::with_sockets(options, sockets, false);
        supervisor.generation = handover.generation;
        supervisor.inherited_control = handover.control;
        supervisor.predecessor = handover.handshake;
        Ok(supervisor)
    }

    fn with_sockets(options: Options, sockets: SlotSockets, store_sockets: bool) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (metrics_tx, metrics_rx) = mpsc::unbounded_channel();
        let workers = options.workers;
        let backoff = Backoff { min: options.backoff_min, max: options.backoff_max };
        let slots = (0..options.workers).map(|_| Slot::new(backoff)).collect();
        let job_workers = if options.jobs_command.is_some() { options.job_workers } else { 0 };
        let job_slots = (0..job_workers).map(|_| Slot::new(backoff)).collect();
        Self {
            options,
            sockets,
            slots,
            job_slots,
            workers: BTreeMap::new(),
            next_id: 1,
            generation: 1,
            phase: Phase::Booting,
            reload: None,
            events_tx,
            events_rx,
            fatal: None,
            relay: Relay::default(),
            limits: Limits::default(),
            recycle_queue: VecDeque::new(),
            notifier: Notifier::from_env(),
            store_sockets,
            retired: vec![Totals::default(); workers],
            retired_jobs: vec![Totals::default(); job_workers],
            removed: Totals::default(),
            metrics_tx,
            metrics_rx,
            rate: RateMeter::new(Instant::now()),
            steering: false,
            inherited_control: None,
            predecessor: None,
            control_fd: None,
            upgrade: None,
        }
    }

    /// A handle the admin listener uses to read the aggregated counters.
    pub fn metrics_client(&self) -> MetricsClient {
        MetricsClient { requests: self.metrics_tx.clone() }
    }

    /// The bound addresses (port 0 resolved).
    pub fn addrs(&self) -> &[SocketAddr] {
        self.sockets.addrs()
    }

    /// Runs until every worker has drained after a stop signal.
    pub async fn run(mut self) -> io::Result<Outcome> {
        let mut signals = Signals::register()?;
        let control = match (self.inherited_control.take(), self.options.control_socket.as_deref()) {
            (Some(listener), Some(path)) => Some(ControlSocket::adopt(listener, path)?),
            (None, Some(path)) => Some(ControlSocket::bind(path)?),
            (_, None) => None,
        };
        self.control_fd = control.as_ref().map(ControlSocket::raw_fd);
        let (control_tx, mut control_rx) = mpsc::unbounded_channel();
        let control_serving = async {
            match &control {
                Some(control) => control.serve(control_tx).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(control_serving);
        self.set_phase(Phase::Booting);
        if self.store_sockets {
            for slot in 0..self.slots.len() {
                self.notifier.store_sockets(slot, self.sockets.slot(slot));
            }
        }
        info!(workers = self.options.workers, listen = ?self.sockets.addrs(), "starting workers");
        for slot in 0..self.slots.len() {
            self.start_worker(SlotId::Http(slot));
        }
        if !self.job_slots.is_empty() {
            info!(job_workers = self.job_slots.len(), "starting job processes");
        }
        for slot in 0..self.job_slots.len() {
            self.start_worker(SlotId::Jobs(slot));
        }
        let mut stop_signals = 0;
        let mut ticks = tokio::time::interval(self.notifier.tick());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.phase == Phase::Draining && self.workers.is_empty() {
                break;
            }
            if let Some(code) = self.fatal {
                self.kill_all();
                return Ok(Outcome::WorkerFatal(code));
            }
            let deadline = self.next_deadline();
            tokio::select! {
                signal = signals.recv() => match signal {
                    Signal::Stop(name) => {
                        stop_signals += 1;
                        if stop_signals > 1 {
                            warn!(signal = name, "second stop signal: killing workers now");
                            self.kill_all();
                            return Ok(Outcome::StoppedAtOnce);
                        }
                        info!(signal = name, "stop requested: draining every worker");
                        self.begin_drain();
                    }
                    Signal::Reload => self.begin_reload(),
                    Signal::Upgrade => {
                        if let Err(error) = self.begin_upgrade() {
                            warn!(%error, "cannot upgrade");
                        }
                    }
                    Signal::AddWorker => self.scale_by_signal(1),
                    Signal::RemoveWorker => self.scale_by_signal(-1),
                },
                Some(event) = self.events_rx.recv() => self.on_event(event),
                _ = ticks.tick() => self.on_tick(),
                Some(reply) = self.metrics_rx.recv() => {
                    let _ = reply.send(self.snapshot());
                }
                () = &mut control_serving => {}
                Some((request, reply)) = control_rx.recv() => {
                    let answer = self.on_control(request);
                    let _ = reply.send(answer);
                }
                _ = sleep_until(deadline) => self.on_timers(),
            }
        }
        if self.upgraded() {
            if let Some(control) = &control {
                control.keep_file();
            }
            info!("every worker has exited; the new supervisor carries on");
            return Ok(Outcome::Upgraded);
        }
        if let Some(path) = &self.options.ready_file {
            let _ = std::fs::remove_file(path);
        }
        info!("every worker has exited; supervisor stopping");
        Ok(Outcome::Drained)
    }

    /// A successor took over (upgrade).
    fn upgraded(&self) -> bool {
        self.upgrade.is_some_and(|u| u.took_over)
    }

    fn set_phase(&mut self, phase: Phase) {
        if self.phase != phase || phase == Phase::Booting {
            info!(phase = phase.as_str(), generation = self.generation, "supervisor phase");
        }
        self.phase = phase;
    }

    fn slot_mut(&mut self, slot: SlotId) -> &mut Slot {
        match slot {
            SlotId::Http(index) => &mut self.slots[index],
            SlotId::Jobs(index) => &mut self.job_slots[index],
        }
    }

    fn slot_ref(&self, slot: SlotId) -> &Slot {
        match slot {
            SlotId::Http(index) => &self.slots[index],
            SlotId::Jobs(index) => &self.job_slots[index],
        }
    }

    fn retired_mut(&mut self, slot: SlotId) -> Option<&mut Totals> {
        match slot {
            SlotId::Http(index) => self.retired.get_mut(index),
            SlotId::Jobs(index) => self.retired_jobs.get_mut(index),
        }
    }

    /// Every slot, HTTP ones first: the order of a rolling restart.
    fn all_slot_ids(&self) -> impl Iterator<Item = SlotId> {
        (0..self.slots.len()).map(SlotId::Http).chain((0..self.job_slots.len()).map(SlotId::Jobs))
    }

    fn start_worker(&mut self, slot: SlotId) -> Option<WorkerId> {
        let generation = self.generation;
        let (command, sockets) = match slot {
            SlotId::Http(index) => (&self.options.command, self.sockets.slot(index)),
            SlotId::Jobs(_) => (self.options.jobs_command.as_ref()?, &[][..]),
        };
        let spawned = match spawn::spawn(command, slot.index(), generation, sockets) {
            Ok(spawned) => spawned,
            Err(error) => {
                // fork or exec failed (for example the binary was removed
                // mid-deploy): treat it like a crash so it is retried with
                // backoff.
                error!(%slot, %error, "cannot start worker");
                self.schedule_respawn(slot, Duration::ZERO);
                return None;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let pid = spawned.child.id().unwrap_or(0);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        tokio::spawn(watch::watch(id, spawned.child, spawned.control, commands_rx, self.events_tx.clone()));
        let now = Instant::now();
        // max_requests counts requests: a job process is recycled by its
        // memory only.
        let recycle_after = match (slot, self.options.max_requests) {
            (SlotId::Jobs(_), _) | (_, 0) => u64::MAX,
            (SlotId::Http(_), max) => max + jitter(self.options.max_requests_jitter),
        };
        let boot_deadline = now + self.options.boot_timeout;
        self.workers.insert(
            id,
            WorkerHandle::booting(slot, generation, pid, commands, now, boot_deadline, recycle_after),
        );
        info!(%slot, pid, generation, "worker started");
        Some(id)
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Message(id, message) => self.on_message(id, message),
            Event::Exited(id, status) => self.on_exit(id, status),
            Event::Successor(event) => self.on_successor(event),
        }
    }

    fn on_message(&mut self, id: WorkerId, message: WorkerMessage) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        match message {
            WorkerMessage::Ready { .. } => {
                if worker.state != WorkerState::Booting {
                    return;
                }
                worker.state = WorkerState::Ready;
                worker.deadline = None;
                worker.last_heartbeat = Instant::now();
                let (slot, pid, generation) = (worker.slot, worker.pid, worker.generation);
                info!(%slot, pid, generation, "worker ready");
                if self.phase == Phase::Draining {
                    // It booted while we were stopping: drain it at once.
                    self.drain_worker(id);
                    return;
                }
                let in_reload = self.reload.as_ref().is_some_and(|r| r.is_replacement(id));
                if in_reload {
                    self.on_replacement_ready();
                } else {
                    self.slot_mut(slot).current = Some(id);
                    self.slot_mut(slot).respawn_at = None;
                    if self.phase == Phase::Booting && self.all_slots_ready() {
                        self.on_first_ready();
                    } else if self.steering && self.all_slots_ready() {
                        // Scaled up after a scale-down: widen the steering
                        // to every slot now that each has a worker.
                        let slots = self.slots.len();
                        if let Err(error) = self.steer(slots) {
                            warn!(%error, "cannot widen connection steering to the new slots");
                        }
                    }
                }
            }
            WorkerMessage::Heartbeat(counters) => {
                worker.last_heartbeat = Instant::now();
                worker.counters = counters;
                self.check_recycle(id);
            }
            WorkerMessage::Exiting { reason } => worker.exit_reason = Some(reason),
            WorkerMessage::Publish { seq, channel, message } => self.relay(id, seq, channel, message),
            WorkerMessage::Delivered { origin, seq } => {
                if self.relay.delivered((origin, seq), id) {
                    self.answer_publish((origin, seq));
                }
            }
            WorkerMessage::Limit { seq, checks } => {
                let verdicts = self.limits.apply(&checks);
                if let Some(worker) = self.workers.get(&id) {
                    let _ = worker.commands.send(Command::Send(SupervisorMessage::Limited { seq, verdicts }));
                }
            }
        }
    }

    /// Sends a publish to every other worker that is serving; answers the
    /// publisher once they have all acknowledged it.
    fn relay(&mut self, origin: WorkerId, seq: u64, channel: String, message: String) {
        let mut recipients = HashSet::new();
        for (&id, worker) in &self.workers {
            // A booting worker has no state to keep in step yet.
            if id == origin || worker.state == WorkerState::Booting {
                continue;
            }
            let deliver = SupervisorMessage::Deliver {
                origin,
                seq,
                channel: channel.clone(),
                message: message.clone(),
            };
            if worker.commands.send(Command::Send(deliver)).is_ok() {
                recipients.insert(id);
            }
        }
        if self.relay.publish((origin, seq), recipients, Instant::now()) {
            self.answer_publish((origin, seq));
        }
    }

    fn answer_publish(&self, (origin, seq): PublishId) {
        if let Some(worker) = self.workers.get(&origin) {
            let _ = worker.commands.send(Command::Send(SupervisorMessage::Published { seq }));
        }
    }

    fn all_slots_ready(&self) -> bool {
        self.slots.iter().chain(&self.job_slots).all(|slot| {
            slot.current.and_then(|id| self.workers.get(&id)).is_some_and(|w| w.state == WorkerState::Ready)
        })
    }

    fn scale_by_signal(&mut self, delta: isize) {
        let target = self.slots.len().saturating_add_signed(delta);
        match self.scale_to(target) {
            Ok(message) => info!(target, "{message}"),
            Err(error) => warn!(target, %error, "cannot scale"),
        }
    }

    /// Runs `target` workers. Up: new slots, each with its sockets and a
    /// worker. Down: the highest slots are retired: new connections are
    /// steered away from their sockets first (see [`crate::steer`]), their
    /// workers accept what was queued and drain, and then the sockets close.
    fn scale_to(&mut self, target: usize) -> Result<String, String> {
        let current = self.slots.len();
        let retiring = self.slots.iter().any(|s| s.retiring);
        let down = match scaling::plan(current, target, self.phase, self.reload.is_some(), retiring)? {
            Plan::Same => return Ok(format!("already running {current} workers")),
            Plan::Down(slots) => slots,
            Plan::Up(slots) => {
                for slot in slots {
                    self.sockets.push_slot(crate::socket::DEFAULT_BACKLOG).map_err(|e| e.to_string())?;
                    if self.store_sockets {
                        self.notifier.store_sockets(slot, self.sockets.slot(slot));
                    }
                    self.slots.push(Slot::new(self.backoff()));
                    self.retired.push(Totals::default());
                    self.start_worker(SlotId::Http(slot));
                }
                info!(from = current, to = target, "scaling up");
                return Ok(format!("scaling up from {current} to {target} workers"));
            }
        };
        match self.steer(down.start) {
            Ok(()) => {}
            Err(error) => warn!(
                %error,
                "cannot steer connections away from retiring slots; connections queued on them as they close may be reset"
            ),
        }
        let retiring: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.slot.http().is_some_and(|s| down.contains(&s)))
            .map(|(&id, _)| id)
            .collect();
        for slot in &mut self.slots[down] {
            slot.retiring = true;
            slot.respawn_at = None;
        }
        for id in retiring {
            self.retire_worker(id);
        }
        info!(from = current, to = target, "scaling down");
        self.finish_scale_down();
        Ok(format!("scaling down from {current} to {target} workers"))
    }

    /// Attaches the steering program to every address's reuseport group.
    fn steer(&mut self, active: usize) -> io::Result<()> {
        let active = u32::try_from(active).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        for socket in self.sockets.slot(0) {
            crate::steer::steer_to_first(socket, active)?;
        }
        self.steering = true;
        Ok(())
    }

    fn retire_worker(&mut self, id: WorkerId) {
        let Some(worker) = self.workers.get_mut(&id) else { return };
        worker.state = WorkerState::Draining;
        worker.deadline = Some(Instant::now() + self.options.drain_timeout + DRAIN_KILL_SLACK + RETIRE_SLACK);
        info!(slot = %worker.slot, pid = worker.pid, "retiring worker");
        let _ = worker.commands.send(Command::Send(SupervisorMessage::Retire));
    }

    /// Closes the retired slots once none of their workers is left.
    fn finish_scale_down(&mut self) {
        let Some(first) = self.slots.iter().position(|s| s.retiring) else { return };
        if self.workers.values().any(|w| w.slot.http().is_some_and(|s| s >= first)) {
            return;
        }
        if self.store_sockets {
            for slot in first..self.slots.len() {
                self.notifier.remove_stored_sockets(slot);
            }
        }
        for totals in self.retired.drain(first..) {
            self.removed.add(&totals);
        }
        self.sockets.truncate(first);
        self.slots.truncate(first);
        info!(workers = first, "scaled down; retired sockets closed");
    }

    fn snapshot(&self) -> Snapshot {
        let metrics = |id: SlotId, retired: &Totals| {
            let mut totals = retired.clone();
            let mut workers = Vec::new();
            for worker in self.workers.values().filter(|w| w.slot == id) {
                totals.add_counters(&worker.counters);
                workers.push(worker.gauges());
            }
            SlotMetrics { slot: id.index(), totals, workers }
        };
        let slots = self.retired.iter().enumerate().map(|(i, t)| metrics(SlotId::Http(i), t)).collect();
        let jobs = self.retired_jobs.iter().enumerate().map(|(i, t)| metrics(SlotId::Jobs(i), t)).collect();
        Snapshot { generation: self.generation, slots, jobs, removed: self.removed.clone() }
    }

    /// Starts the binary now on disk as a new supervisor and hands it the
    /// sockets. It starts its own workers; once they are ready it says so,
    /// and this supervisor drains its workers and exits. If it fails first,
    /// nothing changes here.
    fn begin_upgrade(&mut self) -> Result<String, String> {
        if self.phase != Phase::Running || self.reload.is_some() || self.upgrade.is_some() {
            return Err(format!("busy ({}); try again when it is done", self.phase.as_str()));
        }
        if self.slots.iter().any(|s| s.retiring) {
            return Err("a scale-down is still draining; try again when it is done".into());
        }
        let sockets: Vec<Vec<std::os::fd::RawFd>> = (0..self.slots.len())
            .map(|slot| self.sockets.slot(slot).iter().map(std::os::fd::AsRawFd::as_raw_fd).collect())
            .collect();
        let fds = upgrade::handover_fds(&sockets, self.control_fd, &self.options.handover_extra);
        // The successor is `drover serve` with our flags.
        let mut args = self.options.command.args.clone();
        if let Some(first) = args.first_mut() {
            *first = "serve".into();
        }
        let successor =
            spawn::spawn_successor(&self.options.command.program, &args, &fds, self.generation + 1)
                .map_err(|e| e.to_string())?;
        let pid = successor.child.id().unwrap_or(0);
        info!(pid, "upgrade: new supervisor started; waiting for its workers");
        self.upgrade = Some(Upgrade::started(pid, Instant::now()));
        tokio::spawn(watch_successor(successor, self.events_tx.clone()));
        Ok(format!("upgrade started: new supervisor {pid}"))
    }

    fn on_successor(&mut self, event: SuccessorEvent) {
        let Some(upgrade) = &mut self.upgrade else { return };
        let pid = upgrade.pid;
        match event {
            SuccessorEvent::Ready => {
                info!(pid, "upgrade: the new supervisor is serving; draining this one's workers");
                upgrade.took_over = true;
                self.notifier.main_pid(pid);
                self.begin_drain();
            }
            SuccessorEvent::Exited(status) => {
                if !upgrade.took_over {
                    error!(pid, %status, "upgrade failed: the new supervisor exited before it was ready; still serving");
                    self.upgrade = None;
                }
            }
        }
    }

    /// Answers `drover ctl`.
    fn on_control(&mut self, request: Request) -> Reply {
        let answer = match request {
            Request::Status => return Reply::Status(self.status()),
            Request::Reload => {
                let before = self.phase;
                self.begin_reload();
                match before {
                    Phase::Running => Answer::done("rolling restart started"),
                    Phase::Reloading => Answer::done("a rolling restart is running; another will follow it"),
                    Phase::Booting => Answer::declined("still booting; reload ignored"),
                    Phase::Draining => Answer::declined("stopping; reload ignored"),
                }
            }
            Request::Scale { workers } => self.scale_to(workers).into(),
            Request::Upgrade => self.begin_upgrade().into(),
            Request::Stop => {
                if self.phase != Phase::Draining {
                    info!("stop requested on the control socket: draining every worker");
                    self.begin_drain();
                }
                Answer::done("draining every worker, then exiting")
            }
        };
        Reply::Answer(answer)
    }

    fn status(&self) -> Status {
        let now = Instant::now();
        let workers = self.workers.values().map(|w| w.row(now, rss_bytes(w.pid))).collect();
        Status {
            ok: true,
            pid: std::process::id(),
            phase: self.phase,
            generation: self.generation,
            listen: self.sockets.addrs().iter().map(ToString::to_string).collect(),
            slots: self.slots.len(),
            job_slots: self.job_slots.len(),
            workers,
        }
    }

    /// Periodic: the status line, and the watchdog keep-alive while every
    /// serving worker's event loop is proven alive.
    fn on_tick(&mut self) {
        let now = Instant::now();
        // Retired workers' counts are kept, so the rate does not dip when
        // a worker is replaced.
        let retired: u64 = self.retired.iter().map(|t| t.requests).sum::<u64>() + self.removed.requests;
        let serving = self.workers.values().filter(|w| w.slot.http().is_some());
        let total = retired + serving.map(|w| w.counters.requests).sum::<u64>();
        let rate = self.rate.sample(total, now);
        if self.phase == Phase::Booting {
            return;
        }
        // Half the stall timeout: systemd stops hearing from us well before
        // the stalled worker is killed, so a supervisor that cannot replace
        // it (or is itself stuck) is caught by the service manager.
        let fresh_limit = self.options.stall_timeout / 2;
        let all_fresh = self.workers.values().all(|w| w.fresh(now, fresh_limit));
        if all_fresh && self.phase != Phase::Draining {
            self.notifier.watchdog();
        }
        self.notifier.status(&self.status_line(rate));
    }

    fn status_line(&self, rate: f64) -> String {
        let ready = self
            .workers
            .values()
            .filter(|w| w.slot.http().is_some() && w.state == WorkerState::Ready)
            .count();
        report::status_line(self.phase, ready, self.slots.len(), self.generation, rate)
    }

    fn on_first_ready(&mut self) {
        self.set_phase(Phase::Running);
        if let Some(mut predecessor) = self.predecessor.take() {
            use std::io::Write;
            if let Err(error) = predecessor.write_all(b"ready\n") {
                warn!(%error, "cannot tell the previous supervisor that we are ready");
            }
        }
        self.notifier.ready(&self.status_line(0.0));
        let listen: Vec<String> = self.sockets.addrs().iter().map(ToString::to_string).collect();
        info!(?listen, workers = self.slots.len(), "drover is ready");
        if let Some(path) = &self.options.ready_file {
            let body = report::ready_file(std::process::id(), &listen, &self.options.ready_extra);
            if let Err(error) = report::write_atomically(path, body.as_bytes()) {
                error!(path = %path.display(), %error, "cannot write the ready file");
            }
        }
    }

    fn on_exit(&mut self, id: WorkerId, status: io::Result<ExitStatus>) {
        let Some(worker) = self.workers.remove(&id) else {
            return;
        };
        for publish in self.relay.forget(id) {
            self.answer_publish(publish);
        }
        if let Some(totals) = self.retired_mut(worker.slot) {
            totals.add_counters(&worker.counters);
        }
        let uptime = worker.started.elapsed();
        let status_text = match &status {
            Ok(status) => describe(status),
            Err(error) => format!("unknown ({error})"),
        };
        let reason = worker.exit_reason.as_deref().unwrap_or("none given");
        let slot = worker.slot;

        if slot.http().and_then(|s| self.slots.get(s)).is_some_and(|s| s.retiring) {
            info!(%slot, pid = worker.pid, status = %status_text, reason, "retired worker exited");
            if self.slot_mut(slot).current == Some(id) {
                self.slot_mut(slot).current = None;
            }
            self.finish_scale_down();
            return;
        }
        if worker.state == WorkerState::Draining {
            info!(%slot, pid = worker.pid, status = %status_text, reason, "worker exited after draining");
            if self.slot_mut(slot).current == Some(id) {
                self.slot_mut(slot).current = None;
            }
            self.after_reload_old_exit(id);
            return;
        }

        warn!(
            %slot,
            pid = worker.pid,
            generation = worker.generation,
            status = %status_text,
            reason,
            uptime_ms = uptime.as_millis() as u64,
            "worker exited unexpectedly"
        );
        if let Some(totals) = self.retired_mut(slot) {
            totals.restarts += 1;
        }
        let code = status.as_ref().ok().and_then(ExitStatus::code);
        let fatal = code.filter(|c| FATAL_EXIT_CODES.contains(c));

        // A replacement that failed aborts the rolling restart; the old worker
        // keeps serving.
        if let Some(reload) = &mut self.reload {
            if reload.is_replacement(id) {
                error!(%slot, status = %status_text, "replacement worker failed to boot; rolling restart aborted, the old worker keeps serving");
                self.abort_reload();
                return;
            }
        }

        if self.phase == Phase::Draining {
            return;
        }
        if self.phase == Phase::Booting {
            if let Some(code) = fatal {
                error!(%slot, code, "worker cannot start (bad configuration?); stopping");
                self.fatal = Some(code);
                return;
            }
        }
        if self.slot_mut(slot).current == Some(id) {
            self.slot_mut(slot).current = None;
        }
        let backoff = self.backoff();
        let crash = self.slot_mut(slot).crashed(uptime, Instant::now(), backoff);
        if crash.looping() {
            error!(
                %slot,
                crashes = crash.recent,
                window_s = CRASH_LOOP_WINDOW.as_secs(),
                next_attempt_ms = crash.delay.as_millis() as u64,
                "worker slot is crash-looping"
            );
        }
        self.schedule_respawn(slot, crash.delay);
    }

    fn backoff(&self) -> Backoff {
        Backoff { min: self.options.backoff_min, max: self.options.backoff_max }
    }

    fn schedule_respawn(&mut self, slot: SlotId, delay: Duration) {
        if self.phase == Phase::Draining {
            return;
        }
        info!(%slot, delay_ms = delay.as_millis() as u64, "restarting worker after backoff");
        self.slot_mut(slot).respawn_at = Some(Instant::now() + delay);
    }

    fn begin_reload(&mut self) {
        match self.phase {
            Phase::Draining => {
                info!("reload ignored: stopping");
                return;
            }
            Phase::Reloading => {
                if let Some(reload) = &mut self.reload {
                    reload.run_again();
                }
                info!("reload requested during a reload: another one will follow");
                return;
            }
            Phase::Booting => {
                info!("reload ignored: still booting");
                return;
            }
            Phase::Running => {}
        }
        if self.slots.iter().any(|s| s.retiring) {
            info!("reload ignored: a scale-down is still draining");
            return;
        }
        self.generation += 1;
        // Every worker is about to be replaced; pending recycles are moot.
        self.recycle_queue.clear();
        self.reload = Some(Rollout::rolling(self.all_slot_ids()));
        self.notifier.reloading();
        self.set_phase(Phase::Reloading);
        self.next_reload_step();
    }

    /// Ends a reload that cannot go on; the workers not yet replaced keep
    /// serving. systemd, told `RELOADING=1`, is told `READY=1` again.
    fn abort_reload(&mut self) {
        let kind = self.reload.take().map(|r| r.kind());
        self.set_phase(Phase::Running);
        if kind == Some(rollout::Kind::Rolling) {
            self.notifier.ready(&self.status_line(0.0));
        }
    }

    /// Queues the worker's slot for recycling if it passed a limit.
    fn check_recycle(&mut self, id: WorkerId) {
        let Some(worker) = self.workers.get_mut(&id) else { return };
        let Some(reason) = worker.recycle_reason(self.options.max_rss, || rss_bytes(worker.pid)) else {
            return;
        };
        worker.recycling = true;
        info!(
            slot = %worker.slot,
            pid = worker.pid,
            requests = worker.counters.requests,
            reason,
            "recycling worker"
        );
        self.recycle_queue.push_back((worker.slot, reason));
        self.next_recycle();
    }

    /// Starts the next queued recycle, if nothing else is replacing workers.
    fn next_recycle(&mut self) {
        if self.phase != Phase::Running || self.reload.is_some() {
            return;
        }
        // A slot queued before a scale-down may be gone or retiring.
        let (slot, reason) = loop {
            let Some((slot, reason)) = self.recycle_queue.pop_front() else { return };
            let live = match slot {
                SlotId::Http(index) => self.slots.get(index).is_some_and(|s| !s.retiring),
                SlotId::Jobs(index) => index < self.job_slots.len(),
            };
            if live {
                break (slot, reason);
            }
        };
        self.reload = Some(Rollout::recycle(slot, reason));
        self.set_phase(Phase::Reloading);
        self.next_reload_step();
    }

    fn next_reload_step(&mut self) {
        let Some(reload) = &mut self.reload else {
            return;
        };
        let slot = match reload.advance() {
            Next::Start(slot) => slot,
            Next::Finished { kind, again } => {
                self.reload = None;
                match kind {
                    rollout::Kind::Rolling => info!(generation = self.generation, "rolling restart complete"),
                    rollout::Kind::Recycle(reason) => info!(reason, "worker recycled"),
                }
                self.set_phase(Phase::Running);
                if kind == rollout::Kind::Rolling {
                    self.notifier.ready(&self.status_line(0.0));
                }
                if again {
                    self.begin_reload();
                } else {
                    self.next_recycle();
                }
                return;
            }
        };
        let old = self.slot_mut(slot).current;
        match self.start_worker(slot) {
            Some(new) => {
                if let Some(reload) = &mut self.reload {
                    reload.started(slot, new, old);
                }
            }
            None => {
                error!(%slot, "rolling restart aborted: cannot start a replacement worker");
                self.abort_reload();
            }
        }
    }

    fn on_replacement_ready(&mut self) {
        let Some(step) = self.reload.as_mut().and_then(Rollout::replacement_ready) else {
            return;
        };
        self.slot_mut(step.slot).current = Some(step.new);
        self.slot_mut(step.slot).respawn_at = None;
        match step.old.filter(|old| self.workers.contains_key(old)) {
            Some(old) => self.drain_worker(old),
            // The slot had no live worker (it crashed): nothing to drain.
            None => self.next_reload_step(),
        }
    }

    fn after_reload_old_exit(&mut self, id: WorkerId) {
        if self.reload.as_ref().is_some_and(|r| r.is_draining_old(id)) {
            self.next_reload_step();
        }
    }

    fn drain_worker(&mut self, id: WorkerId) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        if worker.state == WorkerState::Draining {
            return;
        }
        worker.state = WorkerState::Draining;
        worker.deadline = Some(Instant::now() + self.options.drain_timeout + DRAIN_KILL_SLACK);
        info!(slot = %worker.slot, pid = worker.pid, "draining worker");
        let _ = worker.commands.send(Command::Send(SupervisorMessage::Drain));
    }

    fn begin_drain(&mut self) {
        self.reload = None;
        self.notifier.stopping();
        self.set_phase(Phase::Draining);
        for slot in self.slots.iter_mut().chain(&mut self.job_slots) {
            slot.respawn_at = None;
        }
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for id in ids {
            self.drain_worker(id);
        }
    }

    fn kill_all(&mut self) {
        for worker in self.workers.values() {
            let _ = spawn::send_signal(worker.pid, libc::SIGKILL);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let upgrade = self.upgrade.and_then(|u| u.deadline(self.options.boot_timeout));
        let stall = self.options.stall_timeout;
        let stalls = self.workers.values().filter_map(|w| w.stall_deadline(stall));
        let workers = self.workers.values().filter_map(|w| w.deadline).chain(stalls);
        let slots = self.slots.iter().chain(&self.job_slots).filter_map(|s| s.respawn_at);
        workers.chain(slots).chain(self.relay.next_deadline()).chain(upgrade).min()
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        let boot_timeout = self.options.boot_timeout;
        if let Some(upgrade) = self.upgrade.as_mut() {
            if upgrade.check_late(now, boot_timeout) {
                error!(
                    pid = upgrade.pid,
                    "upgrade failed: the new supervisor was not ready in time; killing it, still serving"
                );
                let _ = spawn::send_signal(upgrade.pid, libc::SIGKILL);
            }
        }
        for worker in self.workers.values_mut() {
            let Some(silent) = worker.check_stall(now, self.options.stall_timeout) else {
                continue;
            };
            error!(
                slot = %worker.slot,
                pid = worker.pid,
                silent_ms = silent.as_millis() as u64,
                in_flight = worker.counters.in_flight,
                connections = worker.counters.connections,
                requests = worker.counters.requests,
                "worker event loop stalled (no heartbeat); killing it"
            );
            // Its exit restarts the slot.
            let _ = worker.commands.send(Command::Kill);
        }
        for late in self.relay.expire(now) {
            let slow: Vec<u32> =
                late.slow.iter().filter_map(|id| self.workers.get(id)).map(|w| w.pid).collect();
            warn!(
                ?slow,
                timeout_ms = PUBLISH_TIMEOUT.as_millis() as u64,
                "workers did not acknowledge a publish in time"
            );
            self.answer_publish(late.publish);
        }
        for worker in self.workers.values_mut() {
            let Some(deadline) = worker.deadline else {
                continue;
            };
            if deadline > now {
                continue;
            }
            worker.deadline = None;
            match worker.state {
                WorkerState::Booting => error!(
                    slot = %worker.slot,
                    pid = worker.pid,
                    timeout_ms = self.options.boot_timeout.as_millis() as u64,
                    "worker not ready within the boot timeout; killing it"
                ),
                WorkerState::Draining => warn!(
                    slot = %worker.slot,
                    pid = worker.pid,
                    in_flight = worker.counters.in_flight,
                    "worker still running past the drain timeout; killing it"
                ),
                WorkerState::Ready => continue,
            }
            let _ = worker.commands.send(Command::Kill);
        }
        let due: Vec<SlotId> = self
            .all_slot_ids()
            .filter(|&slot| self.slot_ref(slot).respawn_at.is_some_and(|at| at <= now))
            .collect();
        for slot in due {
            self.slot_mut(slot).respawn_at = None;
            if self.slot_mut(slot).current.is_none() {
                self.start_worker(slot);
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A random number in `0..=max`, for recycling jitter.
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mixed = u64::from(nanos).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(std::process::id());
    mixed % (max + 1)
}
