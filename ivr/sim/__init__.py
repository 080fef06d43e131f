"""The simulated caller: a phone call as Twilio would deliver it, for tests and demos.

`script` (what the caller does), `voice` (its utterances as µ-law frames), `line` (the
caller's end of the Media Stream, on the wire exactly as Twilio), `playback` (what the
caller's phone plays, and when marks are due), `caller` (turn-taking), `transcript`
(the record of the call and how it reads), `run` (`run_call`: place, transcribe, fetch).
"""
