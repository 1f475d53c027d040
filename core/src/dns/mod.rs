//! DNS: the wire codec and the authority machine.
