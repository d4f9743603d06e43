"""Vehicle routing for pharmacy deliveries: a pure library (no web framework, no database).

Data (`problem`), results (`solution`), search (`solve`), the independent checker
(`check`), travel matrices (`matrix`) and the command line (`cli`) are separate modules;
this package re-exports the public API.
"""

from routing.check import check_feasibility, evaluate
from routing.instances import (
    Instance,
    InstanceError,
    load_instance,
    parse_instance,
    problem_from_json,
    problem_to_json,
)
from routing.matrix import (
    CachedMatrix,
    GeodesicMatrix,
    MatrixError,
    MatrixProvider,
    OsrmMatrix,
    PlanarMatrix,
    SpeedProfile,
    TravelMatrix,
    build_matrix,
    default_provider,
)
from routing.problem import (
    Break,
    Depot,
    Location,
    Place,
    Point,
    ProblemError,
    RoutingProblem,
    StartedRoute,
    Stop,
    TimeWindow,
    Vehicle,
)
from routing.solution import Route, RoutePlan, Unserved, Visit
from routing.solve import reoptimise, solve

__all__ = [
    "Break",
    "CachedMatrix",
    "Depot",
    "GeodesicMatrix",
    "Instance",
    "InstanceError",
    "Location",
    "MatrixError",
    "MatrixProvider",
    "OsrmMatrix",
    "Place",
    "PlanarMatrix",
    "Point",
    "ProblemError",
    "Route",
    "RoutePlan",
    "RoutingProblem",
    "SpeedProfile",
    "StartedRoute",
    "Stop",
    "TimeWindow",
    "TravelMatrix",
    "Unserved",
    "Vehicle",
    "Visit",
    "build_matrix",
    "check_feasibility",
    "default_provider",
    "evaluate",
    "load_instance",
    "parse_instance",
    "problem_from_json",
    "problem_to_json",
    "reoptimise",
    "solve",
]
