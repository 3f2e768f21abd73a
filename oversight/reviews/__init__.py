"""The managers' room: the monthly effectiveness review, threshold advice and the policy pages.

`reports` computes a month's figures (`reports_pg` does the same in fewer passes on
PostgreSQL), `advice` the what-ifs for each rule's threshold, `views` and `urls` serve
`/reports/` and `/policies/`, and `tasks` stores and mails each finished month.
"""
