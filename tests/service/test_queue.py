"""The job queue: quiet-period completion, leases that expire, backoff, dead letters, and a
new revision when instances arrive after a study was queued; on SQLite and on a real
PostgreSQL."""

from __future__ import annotations

from medsight.service import InstanceStore

STUDY = "1.2.826.0.1.3680043.8.498.1"


def arrive(store: InstanceStore, now: float) -> None:
    with store.engine.begin() as connection:
        store.queue.received(STUDY, connection, now=now)


def test_quiet_period_lease_expiry_backoff_and_dead_letter(tmp_path, database_url):
    store = InstanceStore(
        tmp_path, database_url, max_attempts=2, backoff_seconds=10, lease_seconds=30
    )
    queue = store.queue
    arrive(store, now=100)
    assert queue.enqueue_quiet_studies(5, now=104) == []  # still receiving
    assert queue.enqueue_quiet_studies(5, now=106) == [STUDY]
    job = queue.lease("a", now=106)
    assert job is not None and job.attempts == 1
    assert queue.lease("b", now=120) is None  # leased to a, not expired
    retaken = queue.lease("b", now=140)  # a's lease ran out: a crashed
    assert retaken is not None and retaken.id == job.id and retaken.attempts == 2
    assert queue.fail(retaken, "boom", now=140) == "dead"  # max_attempts reached
    (row,) = queue.jobs_of(STUDY)
    assert row["state"] == "dead" and row["error"] == "boom"


def test_retry_waits_for_its_backoff(tmp_path, database_url):
    store = InstanceStore(tmp_path, database_url, max_attempts=3, backoff_seconds=10)
    arrive(store, now=0)
    store.queue.enqueue_quiet_studies(1, now=2)
    job = store.queue.lease("a", now=2)
    assert store.queue.fail(job, "transient", now=2) == "queued"
    assert store.queue.lease("a", now=11) is None  # 10 s backoff after the first failure
    again = store.queue.lease("a", now=13)
    assert again is not None and again.attempts == 2


def test_instances_after_queueing_open_a_new_revision(tmp_path, database_url):
    store = InstanceStore(tmp_path, database_url)
    arrive(store, now=0)
    store.queue.enqueue_quiet_studies(1, now=5)
    job = store.queue.lease("a", now=5)
    store.queue.complete(job, "result")
    arrive(store, now=10)  # a late instance: the study will be analysed again
    assert store.queue.enqueue_quiet_studies(1, now=20) == [STUDY]
    revisions = [j["revision"] for j in store.queue.jobs_of(STUDY)]
    assert revisions == [1, 2]


def test_an_instance_is_stored_once_on_either_database(tmp_path, database_url):
    store = InstanceStore(tmp_path, database_url)
    identifiers = {
        "SOPInstanceUID": "1.2.3.4",
        "StudyInstanceUID": STUDY,
        "SeriesInstanceUID": "1.2.3",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7",
    }
    assert store.store(b"DICM-bytes", identifiers, "MODALITY") is True
    assert store.store(b"DICM-bytes", identifiers, "MODALITY") is False
    (instance,) = store.instances_of(STUDY)
    assert store.verify(instance) and store.count() == 1
    # a resend with other bytes (another transfer syntax, say) never replaces the stored file
    assert store.store(b"DICM-other-bytes", identifiers, "OTHER") is False
    assert instance.path.read_bytes() == b"DICM-bytes" and store.verify(instance)
    assert not list(instance.path.parent.glob("*.partial"))


def test_parallel_senders_share_commits_and_each_instance_lands_once(tmp_path):
    import threading

    store = InstanceStore(tmp_path)

    def send(worker: int) -> None:
        for n in range(20):
            identifiers = {
                "SOPInstanceUID": f"1.2.3.{n}",  # every thread sends the same 20 instances
                "StudyInstanceUID": STUDY,
                "SeriesInstanceUID": "1.2.3",
                "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7",
            }
            store.store(f"bytes-{n}".encode(), identifiers, f"SENDER{worker}")

    threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    instances = store.instances_of(STUDY)
    assert len(instances) == 20 == store.count()
    assert all(store.verify(i) for i in instances)
    assert not list((tmp_path / "instances").rglob("*.partial"))
