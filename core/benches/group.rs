//! Criterion benchmarks of MLS commits at several group sizes (real openmls, in memory).
//!
//! `cargo bench -p conclave-core --bench group` — prints the commit and welcome sizes once
//! per size, then times one add commit and one remove commit. Figures go to
//! `docs/performance.md`.

use std::hint::black_box;

use conclave_core::group::mls::validate_key_package;
use conclave_core::group::{MeetingGroup, MlsIdentity, Provider};
use conclave_core::identity::Identity;
use conclave_core::invite::MeetingId;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

struct Host {
    me: MlsIdentity,
    provider: Provider,
    group: MeetingGroup,
}

/// A group of `size` members, built by one host.
fn group_of(size: usize) -> Host {
    let identity = Identity::generate();
    let me = MlsIdentity::new(&identity);
    let provider = Provider::default();
    let mut group = MeetingGroup::create(&provider, &me, MeetingId([9; 16])).expect("create");
    let packages = (1..size)
        .map(|_| {
            let joiner = Identity::generate();
            let kp = MlsIdentity::new(&joiner)
                .key_package(&Provider::default())
                .expect("key package");
            validate_key_package(&provider, &kp, joiner.peer_id()).expect("valid")
        })
        .collect();
    group
        .commit(&provider, &me, packages, vec![], Vec::new())
        .expect("commit");
    group.merge_pending(&provider).expect("merge");
    Host {
        me,
        provider,
        group,
    }
}

fn benches(c: &mut Criterion) {
    let mut commits = c.benchmark_group("mls_commit");
    for size in [2usize, 4, 8, 16, 32] {
        let mut host = group_of(size);
        let newcomer = Identity::generate();
        let newcomer_kp = MlsIdentity::new(&newcomer)
            .key_package(&Provider::default())
            .expect("key package");
        let package =
            validate_key_package(&host.provider, &newcomer_kp, newcomer.peer_id()).expect("valid");

        let add = host
            .group
            .commit(
                &host.provider,
                &host.me,
                vec![package.clone()],
                vec![],
                Vec::new(),
            )
            .expect("add");
        host.group.clear_pending(&host.provider).expect("clear");
        let remove = host
            .group
            .commit(&host.provider, &host.me, vec![], vec![1], Vec::new())
            .expect("remove");
        host.group.clear_pending(&host.provider).expect("clear");
        println!(
            "sizes at {size} members: add commit {} B, welcome {} B, remove commit {} B",
            add.commit.len(),
            add.welcome.as_ref().map_or(0, Vec::len),
            remove.commit.len()
        );

        commits.bench_with_input(BenchmarkId::new("add_one", size), &size, |b, _| {
            b.iter(|| {
                let out = host
                    .group
                    .commit(
                        &host.provider,
                        &host.me,
                        vec![package.clone()],
                        vec![],
                        Vec::new(),
                    )
                    .expect("add");
                host.group.clear_pending(&host.provider).expect("clear");
                black_box(out)
            })
        });
        commits.bench_with_input(BenchmarkId::new("remove_one", size), &size, |b, _| {
            b.iter(|| {
                let out = host
                    .group
                    .commit(&host.provider, &host.me, vec![], vec![1], Vec::new())
                    .expect("remove");
                host.group.clear_pending(&host.provider).expect("clear");
                black_box(out)
            })
        });
    }
    commits.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
