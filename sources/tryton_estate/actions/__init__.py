"""The Tryton estate's governed actions: the order-to-cash contracts (sources.ordertocash)
executed through Tryton's own models and workflow methods, so Tryton's rules apply too."""
