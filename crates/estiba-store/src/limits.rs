//! How big one transaction may be ([`TxnLimits`], from [`crate::Store::limits`]) and the
//! writers' tools to stay within it: [`BoundedTxn`] fills one transaction with whole groups
//! (compares and operations that must commit together) until the next one would not fit, and
//! [`pack`] spreads groups over as few transactions as fit.
//!
//! May not split a group: what must be atomic is the caller's to say, and a group over the
//! limits on its own is the caller's to break up (for example children before their parent).

use crate::{Compare, Op, Txn};

/// The most compares, the most operations, and about the most bytes one transaction may hold.
/// SQLite and memory stores take anything ([`TxnLimits::NONE`]); etcd refuses more than its
/// `--max-txn-ops` and `--max-request-bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnLimits {
    /// The most compares, and separately the most operations, in one transaction.
    pub max_ops: usize,
    /// The most bytes of one request, as [`TxnLimits::size_of`] estimates them.
    pub max_bytes: usize,
    /// Bytes counted per compare and per operation besides its key and value (framing, a key
    /// prefix).
    pub per_op_overhead: usize,
}

impl TxnLimits {
    /// No limit at all.
    pub const NONE: TxnLimits = TxnLimits { max_ops: usize::MAX, max_bytes: usize::MAX, per_op_overhead: 0 };

    /// These limits, or lower ones when `ops` / `bytes` are lower: a writer's own budget.
    pub fn at_most(self, ops: usize, bytes: usize) -> TxnLimits {
        TxnLimits { max_ops: self.max_ops.min(ops), max_bytes: self.max_bytes.min(bytes), ..self }
    }

    fn compare_size(&self, c: &Compare) -> usize {
        match c {
            Compare::ModRevision { key, .. } => key.len() + self.per_op_overhead,
        }
    }

    fn op_size(&self, op: &Op) -> usize {
        match op {
            Op::Put { key, value } => key.len() + value.len() + self.per_op_overhead,
            Op::Delete { key } => key.len() + self.per_op_overhead,
        }
    }

    /// The request size of `txn` as the store estimates it.
    pub fn size_of(&self, txn: &Txn) -> usize {
        txn.compares.iter().map(|c| self.compare_size(c)).sum::<usize>()
            + txn.ops.iter().map(|o| self.op_size(o)).sum::<usize>()
    }

    /// Whether the store takes `txn` in one transaction.
    pub fn fits(&self, txn: &Txn) -> bool {
        txn.compares.len() <= self.max_ops && txn.ops.len() <= self.max_ops && self.size_of(txn) <= self.max_bytes
    }
}

impl Default for TxnLimits {
    fn default() -> Self {
        TxnLimits::NONE
    }
}

/// One transaction filled with whole groups while they fit.
#[derive(Debug)]
pub struct BoundedTxn {
    limits: TxnLimits,
    txn: Txn,
    bytes: usize,
    left_over: bool,
}

impl BoundedTxn {
    pub fn new(limits: TxnLimits) -> Self {
        BoundedTxn { limits, txn: Txn::new(), bytes: 0, left_over: false }
    }

    pub fn limits(&self) -> TxnLimits {
        self.limits
    }

    /// Adds `group` whole when it fits beside what is there and returns true; otherwise leaves
    /// the transaction as it was, notes that work was left over, and returns false.
    pub fn add(&mut self, group: Txn) -> bool {
        let bytes = self.limits.size_of(&group);
        let fits = self.txn.compares.len() + group.compares.len() <= self.limits.max_ops
            && self.txn.ops.len() + group.ops.len() <= self.limits.max_ops
            && self.bytes.saturating_add(bytes) <= self.limits.max_bytes;
        if !fits {
            self.left_over = true;
            return false;
        }
        self.bytes += bytes;
        self.txn.compares.extend(group.compares);
        self.txn.ops.extend(group.ops);
        true
    }

    /// Whether `group` could be added to an empty transaction (else it must be broken up).
    pub fn fits_alone(&self, group: &Txn) -> bool {
        self.limits.fits(group)
    }

    /// Notes that work was left over without trying to add it.
    pub fn leave_over(&mut self) {
        self.left_over = true;
    }

    /// Whether a group was refused (or [`BoundedTxn::leave_over`] called): more work waits.
    pub fn left_over(&self) -> bool {
        self.left_over
    }

    pub fn is_empty(&self) -> bool {
        self.txn.ops.is_empty() && self.txn.compares.is_empty()
    }

    /// Operations added so far.
    pub fn ops(&self) -> usize {
        self.txn.ops.len()
    }

    pub fn into_txn(self) -> Txn {
        self.txn
    }
}

/// Spreads `groups`, in order, over as few transactions as `limits` allow, each group whole in
/// one of them. Returns each transaction with how many groups it holds. A group over the limits
/// on its own gets a transaction of its own (which the store will refuse).
pub fn pack(limits: TxnLimits, groups: impl IntoIterator<Item = Txn>) -> Vec<(Txn, usize)> {
    let mut out = Vec::new();
    let mut cur = BoundedTxn::new(limits);
    let mut n = 0;
    for g in groups {
        if cur.add(g.clone()) {
            n += 1;
            continue;
        }
        if n > 0 {
            out.push((std::mem::replace(&mut cur, BoundedTxn::new(limits)).into_txn(), n));
        }
        n = 1;
        if !cur.add(g.clone()) {
            out.push((g, 1));
            n = 0;
        }
    }
    if n > 0 {
        out.push((cur.into_txn(), n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(i: usize, ops: usize) -> Txn {
        (0..ops)
            .fold(Txn::new().when(Compare::absent(format!("g/{i}"))), |t, j| t.then(Op::delete(format!("g/{i}/{j}"))))
    }

    #[test]
    fn bounded_txn_takes_whole_groups_while_they_fit() {
        let limits = TxnLimits { max_ops: 5, ..TxnLimits::NONE };
        let mut b = BoundedTxn::new(limits);
        assert!(b.add(group(0, 2)));
        assert!(b.add(group(1, 3)));
        assert!(!b.left_over());
        // One more op would be six: refused whole, and noted.
        assert!(!b.add(group(2, 1)));
        assert!(b.left_over());
        let t = b.into_txn();
        assert_eq!((t.compares.len(), t.ops.len()), (2, 5));
        assert!(limits.fits(&t));
    }

    #[test]
    fn compares_count_against_the_limit_on_their_own() {
        let limits = TxnLimits { max_ops: 2, ..TxnLimits::NONE };
        let mut b = BoundedTxn::new(limits);
        assert!(b.add(group(0, 0)));
        assert!(b.add(group(1, 0)));
        assert!(!b.add(group(2, 0)), "a third compare is over the limit");
    }

    #[test]
    fn bytes_are_counted_as_the_store_counts_them() {
        let limits = TxnLimits { max_ops: 100, max_bytes: 100, per_op_overhead: 10 };
        let put = Txn::new().then(Op::put("k", vec![0u8; 50]));
        assert_eq!(limits.size_of(&put), 1 + 50 + 10);
        let mut b = BoundedTxn::new(limits);
        assert!(b.add(put.clone()));
        assert!(!b.add(put.clone()));
        assert!(b.fits_alone(&put));
        assert!(!b.fits_alone(&Txn::new().then(Op::put("k", vec![0u8; 100]))));
        assert_eq!(limits.at_most(3, 1000), TxnLimits { max_ops: 3, max_bytes: 100, per_op_overhead: 10 });
    }

    #[test]
    fn pack_spreads_groups_in_order_over_few_transactions() {
        let limits = TxnLimits { max_ops: 4, ..TxnLimits::NONE };
        let groups = vec![group(0, 2), group(1, 2), group(2, 3), group(3, 9), group(4, 1)];
        let packed = pack(limits, groups);
        let shape: Vec<(usize, usize)> = packed.iter().map(|(t, n)| (t.ops.len(), *n)).collect();
        // [0,1] fill one; 2 alone; 3 is over the limit on its own; 4 starts the next.
        assert_eq!(shape, vec![(4, 2), (3, 1), (9, 1), (1, 1)]);
        assert_eq!(packed.iter().map(|(_, n)| n).sum::<usize>(), 5);
        assert!(pack(limits, Vec::new()).is_empty());
        assert_eq!(pack(TxnLimits::NONE, (0..50).map(|i| group(i, 3))).len(), 1);
    }
}
