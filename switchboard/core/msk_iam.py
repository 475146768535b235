"""Amazon MSK IAM authentication: librdkafka's OAUTHBEARER with a token signed by AWS credentials.

MSK's IAM port (9098) takes, as the OAUTHBEARER token, a base64url SigV4-presigned URL for the
``kafka-cluster:Connect`` action in the cluster's region. ``aws-msk-iam-sasl-signer-python``
(the ``switchboard[msk]`` extra) makes one from botocore's default credential chain
(environment, profile, instance or task role), signing locally: no network call. It is
imported only when ``SWITCHBOARD_KAFKA_AUTH=aws-msk-iam``.

confluent-kafka calls ``oauth_cb`` when a client is created (producer, consumer and admin
alike, before any poll) and again, from ``poll``/``consume``/``flush``, when the token nears
its expiry (15 minutes).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, Final

from switchboard.core.errors import ConfigError, KafkaAccessError

#: The ``SWITCHBOARD_KAFKA_AUTH`` value that turns this on.
MSK_IAM: Final = "aws-msk-iam"
#: The PyPI package that signs the tokens (import name ``aws_msk_iam_sasl_signer``).
SIGNER_PACKAGE: Final = "aws-msk-iam-sasl-signer-python"
_SIGNER_MODULE: Final = "aws_msk_iam_sasl_signer"
#: The librdkafka keys this mode sets; a ``SWITCHBOARD_KAFKA_CONFIG`` must not contradict them.
MSK_IAM_KEYS: Final = {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"}

OAuthCallback = Callable[[str], tuple[str, float]]


def missing_signer() -> str | None:
    """The one line to show when the signer package is not installed, else None."""
    if importlib.util.find_spec(_SIGNER_MODULE) is not None:
        return None
    return (
        f"{MSK_IAM} needs the {SIGNER_PACKAGE} package: pip install 'switchboard[msk]' "
        f"(or pip install {SIGNER_PACKAGE})"
    )


def oauth_callback(region: str) -> OAuthCallback:
    """An ``oauth_cb`` returning ``(token, expiry in seconds since the epoch)`` for ``region``."""
    if (line := missing_signer()) is not None:
        raise ConfigError(line)
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    def oauth_cb(_oauthbearer_config: str) -> tuple[str, float]:
        try:
            token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
        except Exception as exc:  # botocore's credential errors have no common base
            raise KafkaAccessError(
                f"cannot sign an MSK IAM token for {region}: {type(exc).__name__}: {exc} "
                "(give AWS credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
                "or an instance/task role)"
            ) from exc
        return str(token), int(expiry_ms) / 1000.0

    return oauth_cb


def msk_iam_config(region: str) -> dict[str, Any]:
    """The librdkafka keys for MSK IAM: SASL_SSL, OAUTHBEARER and the signing ``oauth_cb``."""
    return {**MSK_IAM_KEYS, "oauth_cb": oauth_callback(region)}
