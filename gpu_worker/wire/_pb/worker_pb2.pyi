from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelDescription(_message.Message):
    __slots__ = ("names", "engine", "tokenizer_kind", "tokenizer_json", "tokenizer_fingerprint", "chat_format", "chat_template", "chat_options", "bos_token_id", "stop_token_ids", "special_token_ids", "vocab_size", "context_length", "tool_call_format", "vision")
    class ChatOptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMES_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_KIND_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_JSON_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CHAT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    CHAT_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    BOS_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    VISION_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    engine: str
    tokenizer_kind: str
    tokenizer_json: str
    tokenizer_fingerprint: str
    chat_format: str
    chat_template: str
    chat_options: _containers.ScalarMap[str, str]
    bos_token_id: int
    stop_token_ids: _containers.RepeatedScalarFieldContainer[int]
    special_token_ids: _containers.RepeatedScalarFieldContainer[int]
    vocab_size: int
    context_length: int
    tool_call_format: str
    vision: bool
    def __init__(self, names: _Optional[_Iterable[str]] = ..., engine: _Optional[str] = ..., tokenizer_kind: _Optional[str] = ..., tokenizer_json: _Optional[str] = ..., tokenizer_fingerprint: _Optional[str] = ..., chat_format: _Optional[str] = ..., chat_template: _Optional[str] = ..., chat_options: _Optional[_Mapping[str, str]] = ..., bos_token_id: _Optional[int] = ..., stop_token_ids: _Optional[_Iterable[int]] = ..., special_token_ids: _Optional[_Iterable[int]] = ..., vocab_size: _Optional[int] = ..., context_length: _Optional[int] = ..., tool_call_format: _Optional[str] = ..., vision: _Optional[bool] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("name", "description", "parameters_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters_json: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters_json: _Optional[str] = ...) -> None: ...

class AgentState(_message.Message):
    __slots__ = ("tool_calls_since_user_message", "user_messages", "last_item_is_tool_output")
    TOOL_CALLS_SINCE_USER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    USER_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    LAST_ITEM_IS_TOOL_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    tool_calls_since_user_message: int
    user_messages: int
    last_item_is_tool_output: bool
    def __init__(self, tool_calls_since_user_message: _Optional[int] = ..., user_messages: _Optional[int] = ..., last_item_is_tool_output: _Optional[bool] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("request_id", "cache_key", "base_len", "base_digest", "tokens", "max_output_tokens", "tools", "tool_choice", "metadata", "model", "agent", "seed", "temperature", "generate", "tokenizer_fingerprint", "top_p", "retain_seconds")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_KEY_FIELD_NUMBER: _ClassVar[int]
    BASE_LEN_FIELD_NUMBER: _ClassVar[int]
    BASE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    GENERATE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    RETAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cache_key: str
    base_len: int
    base_digest: bytes
    tokens: _containers.RepeatedScalarFieldContainer[int]
    max_output_tokens: int
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    tool_choice: str
    metadata: _containers.ScalarMap[str, str]
    model: str
    agent: AgentState
    seed: int
    temperature: float
    generate: bool
    tokenizer_fingerprint: str
    top_p: float
    retain_seconds: int
    def __init__(self, request_id: _Optional[str] = ..., cache_key: _Optional[str] = ..., base_len: _Optional[int] = ..., base_digest: _Optional[bytes] = ..., tokens: _Optional[_Iterable[int]] = ..., max_output_tokens: _Optional[int] = ..., tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., tool_choice: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., model: _Optional[str] = ..., agent: _Optional[_Union[AgentState, _Mapping]] = ..., seed: _Optional[int] = ..., temperature: _Optional[float] = ..., generate: _Optional[bool] = ..., tokenizer_fingerprint: _Optional[str] = ..., top_p: _Optional[float] = ..., retain_seconds: _Optional[int] = ...) -> None: ...

class Prefill(_message.Message):
    __slots__ = ("prompt_tokens", "cached_tokens", "computed_tokens", "queue_seconds")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    cached_tokens: int
    computed_tokens: int
    queue_seconds: float
    def __init__(self, prompt_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ..., computed_tokens: _Optional[int] = ..., queue_seconds: _Optional[float] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("text", "tokens")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    text: str
    tokens: int
    def __init__(self, text: _Optional[str] = ..., tokens: _Optional[int] = ...) -> None: ...

class FunctionCallStart(_message.Message):
    __slots__ = ("call_id", "name")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    name: str
    def __init__(self, call_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class FunctionCallDelta(_message.Message):
    __slots__ = ("arguments", "tokens")
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    arguments: str
    tokens: int
    def __init__(self, arguments: _Optional[str] = ..., tokens: _Optional[int] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("finish_reason", "prompt_tokens", "cached_tokens", "output_tokens", "output_token_ids", "chain_len", "chain_digest", "retained_seconds")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_LEN_FIELD_NUMBER: _ClassVar[int]
    CHAIN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    RETAINED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    finish_reason: str
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    output_token_ids: _containers.RepeatedScalarFieldContainer[int]
    chain_len: int
    chain_digest: bytes
    retained_seconds: int
    def __init__(self, finish_reason: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., output_token_ids: _Optional[_Iterable[int]] = ..., chain_len: _Optional[int] = ..., chain_digest: _Optional[bytes] = ..., retained_seconds: _Optional[int] = ...) -> None: ...

class GenerateEvent(_message.Message):
    __slots__ = ("prefill", "text", "call_start", "call_delta", "done")
    PREFILL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CALL_START_FIELD_NUMBER: _ClassVar[int]
    CALL_DELTA_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    prefill: Prefill
    text: TextDelta
    call_start: FunctionCallStart
    call_delta: FunctionCallDelta
    done: Done
    def __init__(self, prefill: _Optional[_Union[Prefill, _Mapping]] = ..., text: _Optional[_Union[TextDelta, _Mapping]] = ..., call_start: _Optional[_Union[FunctionCallStart, _Mapping]] = ..., call_delta: _Optional[_Union[FunctionCallDelta, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class StopResponse(_message.Message):
    __slots__ = ("stopping",)
    STOPPING_FIELD_NUMBER: _ClassVar[int]
    stopping: bool
    def __init__(self, stopping: _Optional[bool] = ...) -> None: ...

class DropSessionRequest(_message.Message):
    __slots__ = ("cache_key",)
    CACHE_KEY_FIELD_NUMBER: _ClassVar[int]
    cache_key: str
    def __init__(self, cache_key: _Optional[str] = ...) -> None: ...

class DropSessionResponse(_message.Message):
    __slots__ = ("dropped", "tokens_freed")
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FREED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    tokens_freed: int
    def __init__(self, dropped: _Optional[bool] = ..., tokens_freed: _Optional[int] = ...) -> None: ...
