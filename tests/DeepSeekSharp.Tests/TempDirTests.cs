using System.Reflection;
using Xunit.v3;

namespace DeepSeekSharp.Tests;

public class TempDirTests
{
    [Fact]
    public void ATestsTempDirsAreDeletedWhenItEnds()
    {
        Assert.Contains(typeof(TestPaths).Assembly.GetCustomAttributes(), a => a is DeleteTempDirsAfterTestAttribute);
        string dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "left.txt"), "a file the test forgot");
        // What the runner does after every test of the assembly, passed or failed.
        new DeleteTempDirsAfterTestAttribute().After(MethodBase.GetCurrentMethod() as MethodInfo ?? throw new InvalidOperationException(), (IXunitTest)TestContext.Current.Test!);
        Assert.False(Directory.Exists(dir));
    }
}
