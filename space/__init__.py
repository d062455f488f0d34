"""What can be built: the architecture spec, its budget, receptive field and the seed's baselines.

Import from the modules themselves (space.spec, space.model, ...). This package file imports
nothing: space.model needs torch (~3.5 s to import here), and commands that only read a study
(report, dashboard) should not pay for it.
"""
