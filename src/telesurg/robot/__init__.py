"""Patient side: arms, simulation, safety supervisor and servo loop."""
