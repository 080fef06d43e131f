"""ivr: telephony IVR / call-center bot service."""
