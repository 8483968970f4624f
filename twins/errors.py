"""The one base class of every service error, so the API maps any of them to problem+json.

Each app's services raise subclasses (``policy.errors.PolicyError``,
``simulation.errors.RunConflict``, ``telemetry.anomalies.AnomalyError``, ...); the DRF exception
handler (``twins.problems.problem_exception_handler``) answers every one with its ``status``
and ``title`` and the message as ``detail``, with no view code.
"""


class ServiceError(Exception):
    """A service refused a change: ``status`` is the HTTP status, ``title`` the problem title."""

    status = 400
    title = "Request refused"
