"""The beat schedule, in code. Each entry names a task by its dotted path.

Apps add their periodic work here (SLA timers, recurring checklists, the deployment reaper) so the
whole schedule can be read in one place.
"""

from celery.schedules import crontab

BEAT_SCHEDULE: dict[str, dict] = {
    "prune-worker-heartbeats": {
        "task": "releasecenter.tasks.prune_worker_heartbeats",
        "schedule": 300.0,
    },
    # Recurring checklists: open each schedule's run when its time comes, flag missed ones.
    "checklists-open-recurring-runs": {
        "task": "checklists.tasks.open_recurring_runs",
        "schedule": 60.0,
    },
    # Automated checklist items run by themselves when their phase (T-offset) begins.
    "checklists-queue-due-automations": {
        "task": "checklists.tasks.queue_due_automations",
        "schedule": 60.0,
    },
    "checklists-flag-missed-runs": {
        "task": "checklists.tasks.flag_missed_runs",
        "schedule": 60.0,
    },
    # Health checks: claim due checks every few seconds (their next run comes from the schedule,
    # so this interval bounds lateness, not drift); targets and retention.
    "monitoring-dispatch-due-checks": {
        "task": "monitoring.tasks.dispatch_due_checks",
        "schedule": 5.0,
    },
    # Heartbeat checks: a job whose ping is overdue past its grace goes down within 15 s.
    "monitoring-mark-late-heartbeats": {
        "task": "monitoring.tasks.mark_late_heartbeats",
        "schedule": 15.0,
    },
    # The demo's "nightly cleanup" cron job, which pings its heartbeat check when done.
    "monitoring-demo-nightly-cleanup": {
        "task": "monitoring.tasks.demo_nightly_cleanup",
        "schedule": crontab(hour=3, minute=0),
    },
    "monitoring-evaluate-targets": {
        "task": "monitoring.tasks.evaluate_targets",
        "schedule": 60.0,
    },
    "monitoring-prune-results": {
        "task": "monitoring.tasks.prune_results",
        "schedule": 3600.0,
    },
    # Incidents: stamp and record SLA clocks (acknowledge, status update) that ran out.
    "monitoring-incident-sla": {
        "task": "monitoring.incidents.tasks.evaluate_incident_sla",
        "schedule": 15.0,
    },
    # Deployments: fail jobs whose worker stopped heartbeating ("worker lost"), requeue queued
    # jobs whose message was lost. Every 15 s, so a dead worker is noticed within TTL + 15 s.
    "deployments-reap": {
        "task": "deployments.tasks.reap_deployments",
        "schedule": 15.0,
    },
    # On-call: page what is due (level 1 of new incidents, the next level after a missed
    # acknowledge SLA). Its name routes it to the notifications queue.
    "oncall-escalation-tick": {
        "task": "monitoring.oncall.tasks.escalation_tick",
        "schedule": 10.0,
    },
    # On-call: the public status pages' day bars (today and yesterday) from the daily rollups.
    "oncall-refresh-status-days": {
        "task": "monitoring.oncall.tasks.refresh_status_days",
        "schedule": 300.0,
    },
}
