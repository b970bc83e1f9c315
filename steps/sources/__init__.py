"""Where raw data comes from: HTTP downloads with a cache (http), archive safety (archives), IAM's source
layouts (iam) and the bundled synthetic generator (synthetic), all written in the canonical raw layout."""
