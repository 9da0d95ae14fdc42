"""`SessionConfig`: every setting of an `AsyncSession`, to open another one like it."""

from __future__ import annotations

import pickle
import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from vobiz_async import AsyncSession, SessionConfig

TOKEN = "tok-config-Qm3v-never-shown"


class NamedResolver(AbstractResolver):
    """A caller's resolver (it never resolves here)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise OSError("not used")

    async def close(self) -> None:
        return None


def custom_session(**extra: object) -> AsyncSession:
    return AsyncSession(
        "MA_CONFIG",
        TOKEN,
        base_url="http://127.0.0.1:9/api/v1/",
        timeout=12.5,
        max_retries=4,
        trusted_hosts=("media.example", "Vobiz.AI."),
        max_connections=7,
        connect_timeout=1.5,
        read_timeout=2.5,
        allow_private_media=True,
        **extra,  # type: ignore[arg-type]
    )


def test_a_session_opened_from_its_config_has_the_same_config() -> None:
    """`AsyncSession.from_config(s.config).config == s.config`, every setting included."""
    session = custom_session(resolver=NamedResolver())
    config = session.config
    assert AsyncSession.from_config(config).config == config
    assert (config.read_timeout, config.connect_timeout) == (2.5, 1.5)
    assert config.allow_private_media
    assert config.max_connections == 7
    assert config.trusted_hosts == frozenset({"media.example", "vobiz.ai"})
    assert config.resolver is not None


def test_the_token_is_in_no_repr_of_the_config() -> None:
    """The token is a secret: not in `repr`, `str` or the repr of its field."""
    config = custom_session().config
    assert isinstance(config, SessionConfig)
    assert TOKEN not in repr(config)
    assert TOKEN not in str(config)
    assert TOKEN not in repr(config.auth_token)
    assert config.auth_token.value == TOKEN


def test_a_config_without_a_resolver_pickles_whole() -> None:
    """What travels to a worker (`ray.put`) comes back equal, token included."""
    config = custom_session().config
    assert pickle.loads(pickle.dumps(config)) == config  # noqa: S301 - our own bytes
