"""Errors of the simulation services that are not about the request itself.

A bad request is a :class:`simulation.engine.SimulationError` (a ``ValueError``: 400). These
subclass ``twins.errors.ServiceError``, so the API's problem+json handler
(``twins.problems.problem_exception_handler``) maps them to their ``status`` with no view code.
"""

from twins.errors import ServiceError


class RunNotPermitted(ServiceError):
    """The actor lacks ``simulation.add_simulationrun`` or may not operate the asset's twin."""

    status, title = 403, "Not permitted to run simulations here"


class RunConflict(ServiceError):
    """The run is in a state that does not allow this (e.g. cancelling a finished run)."""

    status, title = 409, "Simulation run is not in a state that allows this"
