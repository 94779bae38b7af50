from parley_gateway.tables import Base
from parley_runtime.migrations import run_env

run_env(Base.metadata)
