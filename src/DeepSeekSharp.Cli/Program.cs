Console.WriteLine("dss");
