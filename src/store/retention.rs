//! The retention rules, in one place: both backends list the candidates in their own SQL and
//! delete what these functions choose, inside the same transaction.

use uuid::Uuid;

/// Of a model's version numbers, those beyond the newest `keep` (the newest is always kept),
/// except the `protected` ones (pinned or aliased), which are never pruned.
pub fn excess_versions(mut versions: Vec<u32>, keep: usize, protected: &[u32]) -> Vec<u32> {
    versions.sort_unstable_by(|a, b| b.cmp(a));
    versions
        .into_iter()
        .skip(keep.max(1))
        .filter(|v| !protected.contains(v))
        .collect()
}

/// Of a model's serving history, as insertion sequence numbers, those beyond the newest `keep`.
pub fn excess_history(mut seqs: Vec<i64>, keep: usize) -> Vec<i64> {
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    seqs.into_iter().skip(keep).collect()
}

/// Of the finished jobs, as (finish time in nanoseconds since the epoch, id), those beyond the
/// newest `keep`: the oldest finished go first (ties broken by id, so every backend agrees).
pub fn excess_jobs(mut finished: Vec<(i64, Uuid)>, keep: usize) -> Vec<Uuid> {
    finished.sort_unstable_by(|a, b| b.cmp(a));
    finished.into_iter().skip(keep).map(|(_, id)| id).collect()
}

/// Of a version's evaluations, as (insertion sequence, id), those beyond the newest `keep`.
pub fn excess_evaluations(mut evaluations: Vec<(i64, Uuid)>, keep: usize) -> Vec<Uuid> {
    evaluations.sort_unstable_by(|a, b| b.cmp(a));
    evaluations
        .into_iter()
        .skip(keep)
        .map(|(_, id)| id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_versions_stay_and_at_least_one() {
        assert_eq!(excess_versions(vec![1, 4, 2, 3], 2, &[]), vec![2, 1]);
        assert_eq!(excess_versions(vec![1, 2], 0, &[]), vec![1]);
        assert!(excess_versions(vec![7], 5, &[]).is_empty());
    }

    #[test]
    fn pinned_and_aliased_versions_are_never_pruned() {
        assert_eq!(excess_versions(vec![1, 4, 2, 3], 1, &[1, 2]), vec![3]);
        assert!(excess_versions(vec![1, 2], 1, &[1]).is_empty());
        assert_eq!(excess_history(vec![1, 3, 2], 2), vec![1]);
    }

    #[test]
    fn the_oldest_finished_jobs_go_first() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        assert_eq!(excess_jobs(vec![(5, a), (9, b), (7, c)], 1), vec![c, a]);
        assert_eq!(excess_jobs(vec![(5, a), (5, b)], 1), vec![a]);
        assert!(excess_jobs(vec![(5, a)], 1).is_empty());
    }

    #[test]
    fn the_oldest_evaluations_go_first() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        assert_eq!(excess_evaluations(vec![(2, a), (3, b), (1, c)], 2), vec![c]);
        assert!(excess_evaluations(vec![(1, a)], 1).is_empty());
    }
}
