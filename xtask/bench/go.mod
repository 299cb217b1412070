module example.com/mapbench

go 1.19
