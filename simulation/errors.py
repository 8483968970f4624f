"""Errors of the simulation services that are not about the request itself.

A bad request is a :class:`simulation.engine.SimulationError` (a ``ValueError``: 400). These
subclass ``policy.errors.PolicyError`` so the API's problem+json handler
(``aiw.problems.problem_exception_handler``) maps them to their ``status`` with no view code.
"""

from policy.errors import PolicyError


class RunNotPermitted(PolicyError):
    """The actor lacks ``simulation.add_simulationrun`` or may not operate the asset's twin."""

    status, title = 403, "Not permitted to run simulations here"


class RunConflict(PolicyError):
    """The run is in a state that does not allow this (e.g. cancelling a finished run)."""

    status, title = 409, "Simulation run is not in a state that allows this"
