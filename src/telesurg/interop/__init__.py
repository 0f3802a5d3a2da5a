"""Standard interfaces to the outside world (OpenIGTLink for 3D Slicer and navigation systems).

Everything here is read-only toward the robot: it publishes what the robot measures and never
accepts anything that could move it. Commands reach the robot only through the authenticated link
and the safety supervisor.
"""
