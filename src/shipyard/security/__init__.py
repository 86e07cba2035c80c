"""API tokens with scopes, and the authenticator the server calls (issue 7, section 1).

Imports: errors, SQLAlchemy. Layer L4 (beside runtime/batching/monitoring); the server,
api and cli import it.
"""

from shipyard.security.auth import Authenticator, Principal
from shipyard.security.tokens import SCOPES, TokenInfo, TokenStore

__all__ = ["SCOPES", "Authenticator", "Principal", "TokenInfo", "TokenStore"]
