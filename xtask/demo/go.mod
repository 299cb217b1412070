module example.com/racy-maps

go 1.19
