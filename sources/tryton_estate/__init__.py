"""The Tryton estate: a seeded Tryton ERP (trytond 8.2) run as a child process.

    seed.py     python -m sources.tryton_estate.seed: create a database, activate the
                modules, seed a company, customers, products, stock, a sale and a user
    server.py   TrytonServer: trytond on a free loopback port for one database; the
                seeded SQLite file and PostgreSQL template, each made once and reused

Nothing here imports trytond or proteus: they run in child processes only.
"""
