"""The DeployHQ model: deployments, previews and rollbacks of servers and server groups.

``entry`` is the model's entry (group or single server, decided once); ``options`` what a
deployment deploys and how a run goes; ``rules`` DeployHQ's rollback refusals;
``creation`` records them; ``configfiles`` what goes on a server; ``plan`` the changes
from what the server holds; ``builds`` the build pipeline; ``run`` one server's run;
``groups`` fans out over a group's servers; ``recovery`` repairs what killed runs left.
"""
