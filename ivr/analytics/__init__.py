"""Call analytics: pricing of a call's usage and reports over the call store."""
