from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CkksParameters(_message.Message):
    __slots__ = ("poly_modulus_degree", "coeff_mod_bit_sizes", "scale_bits", "needs_relin_keys")
    POLY_MODULUS_DEGREE_FIELD_NUMBER: _ClassVar[int]
    COEFF_MOD_BIT_SIZES_FIELD_NUMBER: _ClassVar[int]
    SCALE_BITS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_RELIN_KEYS_FIELD_NUMBER: _ClassVar[int]
    poly_modulus_degree: int
    coeff_mod_bit_sizes: _containers.RepeatedScalarFieldContainer[int]
    scale_bits: int
    needs_relin_keys: bool
    def __init__(self, poly_modulus_degree: _Optional[int] = ..., coeff_mod_bit_sizes: _Optional[_Iterable[int]] = ..., scale_bits: _Optional[int] = ..., needs_relin_keys: _Optional[bool] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "released", "kind", "description", "feature_names", "transform_json", "parameters", "max_batch", "max_request_bytes", "logit_noise", "budget_remaining", "output")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_JSON_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOGIT_NOISE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REMAINING_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    released: bool
    kind: str
    description: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    transform_json: str
    parameters: CkksParameters
    max_batch: int
    max_request_bytes: int
    logit_noise: float
    budget_remaining: int
    output: str
    def __init__(self, model_id: _Optional[str] = ..., released: _Optional[bool] = ..., kind: _Optional[str] = ..., description: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., transform_json: _Optional[str] = ..., parameters: _Optional[_Union[CkksParameters, _Mapping]] = ..., max_batch: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., logit_noise: _Optional[float] = ..., budget_remaining: _Optional[int] = ..., output: _Optional[str] = ...) -> None: ...

class OpenSessionRequest(_message.Message):
    __slots__ = ("public_context",)
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    public_context: bytes
    def __init__(self, public_context: _Optional[bytes] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "expires_in_s")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    expires_in_s: float
    def __init__(self, session_id: _Optional[str] = ..., expires_in_s: _Optional[float] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("session_id", "public_context", "n_patients", "features")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    N_PATIENTS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    public_context: bytes
    n_patients: int
    features: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, session_id: _Optional[str] = ..., public_context: _Optional[bytes] = ..., n_patients: _Optional[int] = ..., features: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PredictReply(_message.Message):
    __slots__ = ("logits", "n_patients", "budget_remaining")
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    N_PATIENTS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REMAINING_FIELD_NUMBER: _ClassVar[int]
    logits: bytes
    n_patients: int
    budget_remaining: int
    def __init__(self, logits: _Optional[bytes] = ..., n_patients: _Optional[int] = ..., budget_remaining: _Optional[int] = ...) -> None: ...

class CloseSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseSessionReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
