"""Delivery of alerts and resident notices (SMS, e-mail, WeCom warning group).

Planned by the "Notification delivery" issue.  Until it lands, ``waterwatch
dev`` prints alerts on the console, which is also the default channel when no
provider credentials are set.
"""
