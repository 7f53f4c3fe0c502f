"""The dashboard's pages: functions from records to :class:`~conveyor.daemon.web.html.Markup`."""
