[assembly: DeepSeekSharp.Tests.DeleteTempDirsAfterTest]

namespace DeepSeekSharp.Tests;

internal static class TestPaths
{
    /// <summary>Fixtures copied next to the test assembly.</summary>
    public static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name);

    /// <summary>The repository root (the folder holding DeepSeekSharp.slnx).</summary>
    public static string RepoRoot
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "DeepSeekSharp.slnx"))) dir = dir.Parent;
            return dir?.FullName ?? throw new InvalidOperationException("repository root not found");
        }
    }

    /// <summary>../shared beside the repository.</summary>
    public static string Shared => Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared"));

    /// <summary>
    /// A new folder under the system temp folder, deleted when the test that asked for it ends, passed or failed
    /// (<see cref="DeleteTempDirsAfterTestAttribute"/>); one made outside a test goes when the test process exits.
    /// </summary>
    public static string TempDir()
    {
        string d = Path.Combine(Path.GetTempPath(), "dss-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        TempDirsByTest.GetOrAdd(TestContext.Current.Test?.UniqueID ?? "", _ => []).Add(d);
        return d;
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, System.Collections.Concurrent.ConcurrentBag<string>> TempDirsByTest = InitTempDirs();

    private static System.Collections.Concurrent.ConcurrentDictionary<string, System.Collections.Concurrent.ConcurrentBag<string>> InitTempDirs()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var test in TempDirsByTest.Keys) DeleteTempDirs(test);
        };
        return new();
    }

    /// <summary>Deletes the temporary folders made by the test <paramref name="testId"/> (a folder still in use is retried at exit).</summary>
    internal static void DeleteTempDirs(string testId)
    {
        if (!TempDirsByTest.TryRemove(testId, out var dirs)) return;
        foreach (var d in dirs)
        {
            try
            {
                if (Directory.Exists(d)) Directory.Delete(d, true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                if (testId != "") TempDirsByTest.GetOrAdd("", _ => []).Add(d);
            }
        }
    }
}

/// <summary>Applied to the whole test assembly: every test's temporary folders are deleted when it ends.</summary>
[AttributeUsage(AttributeTargets.Assembly)]
internal sealed class DeleteTempDirsAfterTestAttribute : Xunit.v3.BeforeAfterTestAttribute
{
    public override void After(System.Reflection.MethodInfo methodUnderTest, Xunit.v3.IXunitTest test) => TestPaths.DeleteTempDirs(test.UniqueID);
}
