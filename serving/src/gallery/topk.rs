//! Top-k selection: the bounded shortlist of stage one (the `m` smallest lower bounds and
//! the smallest bound left out, which the proof needs), and the reduction of per-row
//! distances to the `k` closest people.

use std::collections::BinaryHeap;

use super::Candidate;

/// A shortlisted row ordered by the lower bound of its distance key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Bound(pub(super) f32, pub(super) u32);

impl Eq for Bound {}
impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// The `m` rows of smallest lower bound seen so far, and the smallest bound left out.
pub(super) struct Shortlist {
    m: usize,
    /// A max-heap: its top is the worst row kept, the one a better row replaces.
    pub(super) heap: BinaryHeap<Bound>,
    pub(super) excluded_min: f32,
}

impl Shortlist {
    pub(super) fn new(m: usize) -> Self {
        Shortlist {
            m,
            heap: BinaryHeap::with_capacity(m + 1),
            excluded_min: f32::INFINITY,
        }
    }

    #[inline]
    pub(super) fn offer(&mut self, bound: f32, row: u32) {
        if self.heap.len() < self.m {
            self.heap.push(Bound(bound, row));
            return;
        }
        // The heap is full, so it has a top.
        let worst = self.heap.peek().map_or(f32::INFINITY, |b| b.0);
        if bound < worst {
            if let Some(out) = self.heap.pop() {
                self.excluded_min = self.excluded_min.min(out.0);
            }
            self.heap.push(Bound(bound, row));
        } else {
            self.excluded_min = self.excluded_min.min(bound);
        }
    }

    pub(super) fn merge(mut self, other: Shortlist) -> Shortlist {
        self.excluded_min = self.excluded_min.min(other.excluded_min);
        for b in other.heap {
            self.offer(b.0, b.1);
        }
        self
    }
}

/// Reduce per-row distances to each person's minimum (`row_person[i]` owns row `i`) and
/// keep the best `k` of the `people`, closest first, ties by person index; people with no
/// finite distance are left out.
pub(super) fn top_people(
    row_person: &[u32],
    people: usize,
    distances: &[f32],
    k: usize,
) -> Vec<Candidate> {
    if k == 0 || people == 0 {
        return Vec::new();
    }
    let mut best = vec![f32::INFINITY; people];
    for (&p, &d) in row_person.iter().zip(distances) {
        let slot = &mut best[p as usize];
        if d < *slot {
            *slot = d;
        }
    }
    let mut order: Vec<usize> = (0..best.len()).filter(|&i| best[i].is_finite()).collect();
    let by_distance = |a: &usize, b: &usize| best[*a].total_cmp(&best[*b]).then(a.cmp(b));
    if order.len() > k {
        order.select_nth_unstable_by(k - 1, by_distance);
        order.truncate(k);
    }
    order.sort_unstable_by(by_distance);
    order
        .into_iter()
        .map(|person| Candidate {
            person,
            distance: best[person],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_rows(list: &Shortlist) -> Vec<u32> {
        let mut rows: Vec<u32> = list.heap.iter().map(|b| b.1).collect();
        rows.sort_unstable();
        rows
    }

    #[test]
    fn the_shortlist_keeps_the_smallest_bounds_and_the_best_left_out() {
        let bounds = [5.0, 1.0, 4.0, 0.5, 3.0, 2.0];
        let mut whole = Shortlist::new(3);
        for (row, &b) in bounds.iter().enumerate() {
            whole.offer(b, row as u32);
        }
        assert_eq!(sorted_rows(&whole), [1, 3, 5]);
        assert_eq!(whole.excluded_min, 3.0);

        // Split over two chunks and merged, as the parallel scan does: the same answer.
        let (mut a, mut b) = (Shortlist::new(3), Shortlist::new(3));
        for (row, &bound) in bounds.iter().enumerate() {
            let half = if row < 3 { &mut a } else { &mut b };
            half.offer(bound, row as u32);
        }
        let merged = a.merge(b);
        assert_eq!(sorted_rows(&merged), [1, 3, 5]);
        assert_eq!(merged.excluded_min, 3.0);

        // Nothing left out: the proof may treat every row as seen.
        let mut roomy = Shortlist::new(10);
        roomy.offer(1.0, 0);
        assert_eq!(roomy.excluded_min, f32::INFINITY);
    }

    #[test]
    fn top_people_takes_each_persons_closest_row() {
        // Rows of people 0, 1, 0, 2, 1; person 3 has no rows.
        let row_person = [0, 1, 0, 2, 1];
        let distances = [0.9, 0.4, 0.2, f32::INFINITY, 0.4];
        let top = top_people(&row_person, 4, &distances, 10);
        let got: Vec<(usize, f32)> = top.iter().map(|c| (c.person, c.distance)).collect();
        assert_eq!(got, [(0, 0.2), (1, 0.4)]);
        let one = top_people(&row_person, 4, &distances, 1);
        assert_eq!(
            one,
            [Candidate {
                person: 0,
                distance: 0.2
            }]
        );
        assert!(top_people(&row_person, 4, &distances, 0).is_empty());
        // Equal distances: the lower person index first.
        let tied = top_people(&[1, 0], 2, &[0.3, 0.3], 1);
        assert_eq!(tied[0].person, 0);
    }
}
