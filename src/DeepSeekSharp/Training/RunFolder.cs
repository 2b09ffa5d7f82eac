using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace DeepSeekSharp.Training;

/// <summary>
/// One run owns its output folder for as long as it lives: <c>run.lock</c> holds its PID under an exclusive file
/// lock (flock), which the kernel releases when the process ends however it ends, so a killed run's lock is simply
/// taken over and two live runs can never interleave their checkpoints or metrics. Taking the folder removes what
/// killed runs left (temporary checkpoint folders and files). A fresh run refuses a folder that holds a previous
/// run's record (checkpoints, metrics.jsonl, tensorboard/) unless told to start clean.
/// </summary>
public sealed partial class RunFolder : IDisposable
{
    public const string LockFile = "run.lock";

    private readonly FileStream _lock;

    private RunFolder(string path, FileStream lockStream)
    {
        Path = path;
        _lock = lockStream;
    }

    public string Path { get; }

    /// <summary>Takes <paramref name="outputDir"/> for this process (creating it), or says which process holds it.</summary>
    public static RunFolder Acquire(string outputDir)
    {
        Directory.CreateDirectory(outputDir);
        string lockPath = System.IO.Path.Combine(outputDir, LockFile);
        FileStream stream;
        try
        {
            // FileShare.None is an exclusive flock on Unix: refused while another live process holds it.
            stream = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException)
        {
            string? pid = ReadPidUnlocked(lockPath);
            throw new DeepSeekSharpException($"{outputDir}: in use by another run{(pid is null ? "" : $" (PID {pid})")}; wait for it to end or choose another output_dir");
        }
        stream.SetLength(0);
        stream.Write(Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{Environment.ProcessId}\n")));
        stream.Flush(flushToDisk: true);
        var folder = new RunFolder(outputDir, stream);
        CheckpointStore.RemoveLeftovers(outputDir);
        return folder;
    }

    /// <summary>Whether a previous run left its record here (checkpoints, metrics, TensorBoard events).</summary>
    public bool HasRunRecord =>
        File.Exists(MetricsLog.JsonlFile(Path)) || Directory.Exists(MetricsLog.TensorBoardFolder(Path)) || CheckpointStore.All(Path).Any();

    /// <summary>
    /// Makes the folder ready for a run that starts at step 0: a previous run's record is refused, or with
    /// <paramref name="overwrite"/> deleted (never when one of <paramref name="inputs"/> lies inside what would go).
    /// The token cache and a trained tokenizer stay: they are inputs keyed on content, not part of the record.
    /// </summary>
    public void StartFresh(bool overwrite, IEnumerable<string?> inputs)
    {
        if (!HasRunRecord) return;
        if (!overwrite)
            throw new DeepSeekSharpException($"{Path}: holds a previous run (checkpoints or metrics); continue it with --resume {Path}, or pass --overwrite to start a new run there");
        var record = CheckpointStore.All(Path).Select(c => c.Dir)
            .Append(MetricsLog.JsonlFile(Path)).Append(MetricsLog.TensorBoardFolder(Path)).ToList();
        foreach (var input in inputs)
            foreach (var item in record)
                if (input is not null && (File.Exists(input) || Directory.Exists(input)) && IO.AtomicFolder.IsSameOrInside(input, item))
                    throw new DeepSeekSharpException($"{Path}: --overwrite would delete {item}, which holds the input {input}");
        foreach (var item in record)
        {
            if (Directory.Exists(item)) IO.AtomicFolder.Delete(item);
            else if (File.Exists(item)) File.Delete(item);
        }
    }

    public void Dispose() => _lock.Dispose();

    /// <summary>
    /// Reads the holder's PID without .NET's advisory lock (which a reader would also request, and be refused).
    /// </summary>
    private static string? ReadPidUnlocked(string path)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return null;
        int fd = Open(path, 0);
        if (fd < 0) return null;
        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        var buffer = new byte[32];
        int n = RandomAccess.Read(handle, buffer, 0);
        string text = Encoding.ASCII.GetString(buffer, 0, n).Trim();
        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out _) ? text : null;
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);
}
