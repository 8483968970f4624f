"""An in-process stand-in for Celery beat, for the demo (which runs no beat process).

Every ``interval`` seconds it expires lapsed proposals, judges complete verification windows,
recovers commands left in flight by a crash (``recover_commands``), queues notification
deliveries whose queueing failed (``requeue_unsent``) and anchors the audit chain, the same
services the beat schedule calls in production.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection

from policy import services
from policy.notifications import requeue_unsent
from twins.audit_chain import write_anchor

log = logging.getLogger(__name__)


class PolicySweeper:
    """A daemon thread running the periodic policy work until ``stop()``."""

    def __init__(self, interval: float = 5.0, anchor_every: int = 12) -> None:
        self.interval, self.anchor_every = interval, anchor_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy-sweeper", daemon=True)

    def start(self) -> PolicySweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        rounds = 0
        while not self._stop.wait(self.interval):
            close_old_connections()
            try:
                services.expire_proposals()
                services.verify_due()
                services.recover_commands()
                requeue_unsent(settings.NOTIFY_REQUEUE_AFTER_SECONDS)
                if rounds % self.anchor_every == 0:
                    write_anchor()
            except Exception:  # the sweep must survive one bad round; the next retries
                log.exception("policy sweep failed")
            rounds += 1
        connection.close()
