"""Notification backends behind the `Notifier` port: one module per kind (`webhook`, `slack`),
sharing the HTTP delivery with bounded retries (`http`). `adapters.factory.notifiers` maps each
`NotificationKind` to its backend."""
