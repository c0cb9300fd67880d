//! Recording host and guest traces through tracefs (see issue 4).
