//! tracefs `format`, `header_page` and `header_event` files.
