"""One router per area; `api_gateway.app` includes them all."""
