"""What stands behind a replica: the engine in this process (local.py), a sovllm worker
(worker.py), or any OpenAI-compatible server such as vLLM, llama.cpp's server, SGLang or
another sovllm (openai_compat.py).

Each backend opens request streams and answers health probes (the protocol and its failure are
in base.py, what the HTTP backends share in http.py). A stream that breaks because its replica
failed raises ReplicaFailure, so the router can retry the request elsewhere when no token has
reached the client yet; a request the replica refused raises an EngineError.
"""

from sovllm.pool.backends.base import Backend, Probe, ReplicaFailure, replica_failure
from sovllm.pool.backends.local import LocalBackend
from sovllm.pool.backends.openai_compat import OpenAIBackend, vllm_stats
from sovllm.pool.backends.worker import WorkerBackend

__all__ = [
    "Backend",
    "LocalBackend",
    "OpenAIBackend",
    "Probe",
    "ReplicaFailure",
    "WorkerBackend",
    "replica_failure",
    "vllm_stats",
]
