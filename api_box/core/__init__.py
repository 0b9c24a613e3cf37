"""Pure cores of the API box: protocol parsing, events, the session state machine. No I/O."""
