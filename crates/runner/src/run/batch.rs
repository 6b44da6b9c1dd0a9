//! Several runs evaluated as one batch: each run keeps its own thread, image, targets, optimizer
//! and stopping, and only its network passes are pooled.
//!
//! Each run's objective makes its passes through a [`Member`] of a shared [`Batch`] (a
//! [`NetworkPass`]). A member's call waits until every member still in the batch is waiting;
//! the last one to arrive then serves the whole round: forward requests of the same network and
//! image size are concatenated into one `(B, 3, H, W)` pass (every layer any of them reads), and
//! each member gets its own slice of the activations; backward requests of one such group go
//! through the group's tape together, the layer gradients of members that sent none being zeros.
//! Losses, their gradients and the optimizer steps stay in each run's thread, in parallel.
//!
//! Why the results are a single run's: every operation of the network is per image along the
//! batch dimension (the CPU convolution puts all images' tiles into the same products, but a
//! column of those products is one tile of one image; cuDNN and candle never mix images), so an
//! image's activations and gradient do not depend on the others'; on the CPU they have come out
//! bit for bit those of an unbatched pass (integration test
//! `batch::batched_sweep_equals_sequential_runs`: every loss and output byte). A NaN in one
//! image stays in its slice.
//!
//! Failures stay per run: a run whose objective fails or panics leaves the batch (its
//! [`Member`] is dropped) and the others go on without it; a forward pass that fails for a
//! group of several images is retried image by image, so that only the image that fails gets
//! the error; a panic in a pass becomes an error of the requests it served.
//!
//! Runs join lazily, at their first pass, and leave when their optimisation ends, so a run
//! computing its targets or writing its outputs does not hold the others back; runs of
//! different sizes or networks in flight at once simply form separate groups of a round.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use candle_core::{DType, Tensor};
use losses::NetworkPass;
use vgg::{Features, Layer, Tape, Vgg19};

/// A request of one member for the next round.
enum Request {
    Forward(Forward),
    Backward(Backward),
}

/// The activations of `layers` at `x` (`(1, 3, H, W)`) through `net`.
struct Forward {
    ticket: u64,
    net: Arc<Vgg19>,
    x: Tensor,
    layers: Vec<Layer>,
}

/// The image gradient of image `index` of forward group `group` from the gradients at its
/// layers.
struct Backward {
    ticket: u64,
    group: u64,
    index: usize,
    grads: BTreeMap<Layer, Tensor>,
}

impl Request {
    fn is_backward(&self) -> bool {
        matches!(self, Request::Backward(_))
    }
}

/// What a round gives back to one request.
enum Reply {
    /// The member's activations, and where its image sits (for its backward pass).
    Forward { group: u64, index: usize, features: Features },
    /// The member's image gradient, `(1, 3, H, W)`.
    Backward(Tensor),
}

/// A forward pass's tape, kept until every image of its group has had its backward pass (or
/// given it up).
struct GroupTape {
    net: Arc<Vgg19>,
    tape: Tape,
    /// Images of the group, `B`.
    images: usize,
    /// Images whose backward pass has not been made or given up yet.
    outstanding: usize,
}

/// How much batching happened, for the sweep's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Forward passes made (one per group and round).
    pub passes: usize,
    /// Images they computed.
    pub images: usize,
    /// The most images of one pass.
    pub largest: usize,
}

#[derive(Default)]
struct State {
    /// Members that will call again.
    members: usize,
    /// Requests of the next round.
    waiting: Vec<Request>,
    /// Replies not yet picked up, by ticket.
    replies: HashMap<u64, losses::Result<Reply>>,
    /// A member is serving a round.
    serving: bool,
    next_ticket: u64,
    next_group: u64,
    tapes: HashMap<u64, GroupTape>,
    /// Backward passes given up (a member that went on to a new forward pass or left), by group.
    given_up: Vec<u64>,
    stats: BatchStats,
}

/// The runs of one batch; see the module's documentation.
#[derive(Default)]
pub struct Batch {
    state: Mutex<State>,
    wake: Condvar,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// How much batching happened so far.
    pub fn stats(&self) -> BatchStats {
        self.lock().stats
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock: a poisoned lock's state is consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One run's place in a [`Batch`]: its objective's [`NetworkPass`].
pub struct Member {
    batch: Arc<Batch>,
    net: Arc<Vgg19>,
    joined: bool,
    /// The group and index of this member's last forward pass, until its backward pass.
    last: Option<(u64, usize)>,
}

impl Member {
    /// A member of `batch` whose passes go through `net`.
    pub fn new(batch: Arc<Batch>, net: Arc<Vgg19>) -> Self {
        Self { batch, net, joined: false, last: None }
    }

    /// Leaves the batch: the others no longer wait for this run (idempotent; also on drop).
    pub fn leave(&mut self) {
        if !self.joined {
            return;
        }
        self.joined = false;
        let mut st = self.batch.lock();
        st.members -= 1;
        if let Some((group, _)) = self.last.take() {
            st.given_up.push(group);
        }
        drop(st);
        self.batch.wake.notify_all();
    }

    /// Waits for the round that serves `request`, serving it when this member is the last to
    /// arrive, and returns its reply.
    fn call(&mut self, request: impl FnOnce(u64) -> Request) -> losses::Result<Reply> {
        let batch = self.batch.clone();
        let mut st = batch.lock();
        if !self.joined {
            st.members += 1;
            self.joined = true;
        }
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.waiting.push(request(ticket));
        loop {
            if let Some(reply) = st.replies.remove(&ticket) {
                return reply;
            }
            if !st.serving && st.waiting.len() >= st.members {
                st.serving = true;
                let round = take_round(&mut st.waiting);
                for g in std::mem::take(&mut st.given_up) {
                    release(&mut st.tapes, g);
                }
                let groups: BTreeSet<u64> = round
                    .iter()
                    .filter_map(|r| match r {
                        Request::Backward(b) => Some(b.group),
                        Request::Forward(_) => None,
                    })
                    .collect();
                let mut tapes: HashMap<u64, GroupTape> =
                    groups.iter().filter_map(|g| st.tapes.remove(g).map(|t| (*g, t))).collect();
                let first_group = st.next_group;
                drop(st);
                let mut next_group = first_group;
                let served = serve(round, &mut tapes, &mut next_group);
                st = batch.lock();
                st.next_group = next_group;
                for (ticket, reply) in served.replies {
                    st.replies.insert(ticket, reply);
                }
                st.stats.passes += served.passes;
                st.stats.images += served.images;
                st.stats.largest = st.stats.largest.max(served.largest);
                // Tapes of groups some image of which has not had its backward pass yet.
                for (g, t) in tapes.into_iter().chain(served.tapes) {
                    if t.outstanding > 0 {
                        st.tapes.insert(g, t);
                    }
                }
                st.serving = false;
                batch.wake.notify_all();
                continue;
            }
            st = batch.wake.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.leave();
    }
}

/// The requests a round serves: the backward passes when there are any (the forward requests
/// wait for the next round), else every request. Runs out of step (one at its backward pass
/// while another is at its forward pass) so fall back into step: serving both kinds in one
/// round would keep them apart, each forward pass a group of its own.
fn take_round(waiting: &mut Vec<Request>) -> Vec<Request> {
    if waiting.iter().all(Request::is_backward) || !waiting.iter().any(Request::is_backward) {
        return std::mem::take(waiting);
    }
    let (backward, forward) = std::mem::take(waiting).into_iter().partition(Request::is_backward);
    *waiting = forward;
    backward
}

/// One image of group `g` gave up its backward pass.
fn release(tapes: &mut HashMap<u64, GroupTape>, g: u64) {
    if let Some(t) = tapes.get_mut(&g) {
        t.outstanding = t.outstanding.saturating_sub(1);
        if t.outstanding == 0 {
            tapes.remove(&g);
        }
    }
}

impl NetworkPass for Member {
    fn forward(&mut self, x: &Tensor, layers: &[Layer]) -> losses::Result<Features> {
        if let Some((group, _)) = self.last.take() {
            // The previous forward pass had no backward pass (an objective without network
            // gradients): its image no longer holds the group's tape.
            self.batch.lock().given_up.push(group);
        }
        let (net, x, layers) = (self.net.clone(), x.clone(), layers.to_vec());
        match self.call(|ticket| Request::Forward(Forward { ticket, net, x, layers }))? {
            Reply::Forward { group, index, features } => {
                self.last = Some((group, index));
                Ok(features)
            }
            Reply::Backward(_) => Err(mismatch()),
        }
    }

    fn backward(&mut self, grads: BTreeMap<Layer, Tensor>) -> losses::Result<Tensor> {
        let (group, index) = self.last.take().ok_or_else(mismatch)?;
        match self.call(|ticket| Request::Backward(Backward { ticket, group, index, grads }))? {
            Reply::Backward(g) => Ok(g),
            Reply::Forward { .. } => Err(mismatch()),
        }
    }
}

fn mismatch() -> losses::Error {
    losses::Error::Pass(Box::new(PassError::Protocol))
}

/// Why a batched pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The pass of this member's group failed (every member of the group gets it).
    #[error("the batched network pass failed")]
    Failed(#[source] Arc<losses::Error>),
    /// The pass panicked.
    #[error("the batched network pass panicked: {0}")]
    Panicked(String),
    /// A backward pass without its forward pass (an internal error).
    #[error("a backward pass without a forward pass")]
    Protocol,
}

/// What serving a round produced.
#[derive(Default)]
struct Served {
    replies: Vec<(u64, losses::Result<Reply>)>,
    tapes: Vec<(u64, GroupTape)>,
    passes: usize,
    images: usize,
    largest: usize,
}

/// Forward requests that share a network and an image size: one pass.
type GroupKey = (usize, Vec<usize>);

/// Serves one round: forward groups, then backward groups; panics become errors.
fn serve(round: Vec<Request>, tapes: &mut HashMap<u64, GroupTape>, next_group: &mut u64) -> Served {
    let mut forwards: BTreeMap<GroupKey, Vec<Forward>> = BTreeMap::new();
    let mut backwards: BTreeMap<u64, Vec<Backward>> = BTreeMap::new();
    for r in round {
        match r {
            Request::Forward(f) => {
                let key = (Arc::as_ptr(&f.net) as usize, f.x.dims().to_vec());
                forwards.entry(key).or_default().push(f);
            }
            Request::Backward(b) => backwards.entry(b.group).or_default().push(b),
        }
    }
    let mut served = Served::default();
    for (group, requests) in backwards {
        let tickets: Vec<u64> = requests.iter().map(|r| r.ticket).collect();
        let result = match tapes.get_mut(&group) {
            Some(t) => {
                t.outstanding = t.outstanding.saturating_sub(requests.len());
                guarded(|| backward_group(t, requests))
            }
            None => Err(losses::Error::Pass(Box::new(PassError::Protocol))),
        };
        match result {
            Ok(replies) => served.replies.extend(replies),
            Err(e) => {
                let e = failed(e);
                served.replies.extend(tickets.into_iter().map(|t| (t, Err(e()))));
            }
        }
        if tapes.get(&group).is_some_and(|t| t.outstanding == 0) {
            tapes.remove(&group);
        }
    }
    for (_, requests) in forwards {
        let images = requests.len();
        served.passes += 1;
        served.images += images;
        served.largest = served.largest.max(images);
        let group = *next_group;
        *next_group += 1;
        let tickets: Vec<u64> = requests.iter().map(|r| r.ticket).collect();
        match guarded(|| forward_group(&requests)) {
            Ok((replies, tape)) => {
                served.replies.extend(
                    replies
                        .into_iter()
                        .zip(&tickets)
                        .enumerate()
                        .map(|(index, (features, t))| (*t, Ok(Reply::Forward { group, index, features }))),
                );
                served.tapes.push((group, tape));
            }
            Err(_) if images > 1 => {
                // Image by image: only the images that fail get an error.
                for one in requests {
                    let (group, ticket) = (*next_group, one.ticket);
                    *next_group += 1;
                    let one = [one];
                    match guarded(|| forward_group(&one)) {
                        Ok((mut f, tape)) => {
                            let features = f.pop().unwrap_or_default();
                            served.replies.push((ticket, Ok(Reply::Forward { group, index: 0, features })));
                            served.tapes.push((group, tape));
                        }
                        Err(e) => served.replies.push((ticket, Err(e))),
                    }
                }
            }
            Err(e) => {
                let e = failed(e);
                served.replies.extend(tickets.into_iter().map(|t| (t, Err(e()))));
            }
        }
    }
    served
}

/// Runs `f`, a panic becoming an error.
fn guarded<T>(f: impl FnOnce() -> losses::Result<T>) -> losses::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let msg = crate::error::panic_message(&*panic);
        Err(losses::Error::Pass(Box::new(PassError::Panicked(msg))))
    })
}

/// The same failure for every request of a group.
fn failed(e: losses::Error) -> impl Fn() -> losses::Error {
    let e = Arc::new(e);
    move || losses::Error::Pass(Box::new(PassError::Failed(e.clone())))
}

/// One forward pass over the images of `requests` (one network, one size): each request's
/// activations (`(1, C, H, W)` slices of the batch's) and the group's tape.
fn forward_group(requests: &[Forward]) -> losses::Result<(Vec<Features>, GroupTape)> {
    let net = requests[0].net.clone();
    let images = requests.len();
    let mut layers: Vec<Layer> = requests.iter().flat_map(|r| r.layers.iter().copied()).collect();
    layers.sort();
    layers.dedup();
    let (features, tape) = if images == 1 {
        net.forward_tape(&requests[0].x, &layers)?
    } else {
        let xs: Vec<&Tensor> = requests.iter().map(|r| &r.x).collect();
        net.forward_tape(&Tensor::cat(&xs, 0)?, &layers)?
    };
    let mut out = Vec::with_capacity(images);
    for (index, r) in requests.iter().enumerate() {
        let mut own = Features::new();
        for l in &r.layers {
            let f = features.get(l).ok_or_else(|| losses::Error::Config(format!("no activation for {l}")))?;
            own.insert(*l, if images == 1 { f.clone() } else { f.narrow(0, index, 1)? });
        }
        out.push(own);
    }
    Ok((out, GroupTape { net, tape, images, outstanding: images }))
}

/// One backward pass for the images of a group that asked for it: the layer gradients of the
/// others are zeros (their slices of the result are not used).
fn backward_group(t: &GroupTape, requests: Vec<Backward>) -> losses::Result<Vec<(u64, losses::Result<Reply>)>> {
    if t.images == 1 {
        let mut requests = requests;
        let b = requests.pop().ok_or_else(mismatch)?;
        return Ok(vec![(b.ticket, Ok(Reply::Backward(t.net.backward(&t.tape, b.grads)?)))]);
    }
    let layers: BTreeSet<Layer> = requests.iter().flat_map(|r| r.grads.keys().copied()).collect();
    let mut by_index: Vec<Option<&BTreeMap<Layer, Tensor>>> = vec![None; t.images];
    for r in &requests {
        if let Some(slot) = by_index.get_mut(r.index) {
            *slot = Some(&r.grads);
        }
    }
    let mut batched = BTreeMap::new();
    for l in layers {
        let like = requests.iter().find_map(|r| r.grads.get(&l)).ok_or_else(mismatch)?;
        let zeros = Tensor::zeros(like.dims(), DType::F32, like.device())?;
        let parts: Vec<&Tensor> = by_index.iter().map(|g| g.and_then(|g| g.get(&l)).unwrap_or(&zeros)).collect();
        batched.insert(l, Tensor::cat(&parts, 0)?);
    }
    let grad = t.net.backward(&t.tape, batched)?;
    requests.into_iter().map(|r| Ok((r.ticket, Ok(Reply::Backward(grad.narrow(0, r.index, 1)?))))).collect()
}
