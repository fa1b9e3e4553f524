using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace Quantization;

/// <summary>
/// Names code the library assembles at run time in the perf map the runtime writes for profilers
/// (<c>/tmp/perf-PID.map</c>, one <c>0xSTART SIZE name</c> line per symbol, hexadecimal), when the process runs with
/// <c>DOTNET_PerfMapEnabled</c> 1 or 3. Linux only; a failure to write is ignored (a profiling aid never stops the library).
/// </summary>
/// <remarks>
/// The runtime keeps the map open and writes it without <c>O_APPEND</c>: lines appended through another descriptor would
/// be overwritten by its next ones. So the lines go through the runtime's own descriptor (found in <c>/proc/self/fd</c>),
/// whose file offset the runtime's writes share; where the runtime has no map open, they are appended to the file.
/// </remarks>
internal static partial class PerfMap
{
    /// <summary>Gets a value indicating whether the runtime writes a perf map: <c>DOTNET_PerfMapEnabled</c> (or the older <c>COMPlus_</c> prefix) is 1 (with jitdump) or 3 (map only).</summary>
    public static bool IsEnabled =>
        OperatingSystem.IsLinux() && (Environment.GetEnvironmentVariable("DOTNET_PerfMapEnabled") ?? Environment.GetEnvironmentVariable("COMPlus_PerfMapEnabled")) is "1" or "3";

    /// <summary>Gets the map's path: <c>perf-PID.map</c> in <c>DOTNET_PerfMapJitDumpPath</c>, or in /tmp, where perf looks.</summary>
    public static string FilePath =>
        Path.Combine(Environment.GetEnvironmentVariable("DOTNET_PerfMapJitDumpPath") ?? "/tmp", string.Create(CultureInfo.InvariantCulture, $"perf-{Environment.ProcessId}.map"));

    /// <summary>Writes a line per symbol to the map; does nothing where it cannot.</summary>
    /// <param name="symbols">The code: its first byte, its size in bytes, its name.</param>
    public static void TryWrite(IReadOnlyList<(IntPtr Start, int Size, string Name)> symbols)
    {
        try
        {
            byte[] lines = Encoding.UTF8.GetBytes(Format(symbols));
            if (RuntimeDescriptor(FilePath) is int descriptor)
            {
                WriteAll(descriptor, lines);
            }
            else
            {
                using FileStream file = new(FilePath, FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
                file.Write(lines);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DllNotFoundException or EntryPointNotFoundException)
        {
            // No map then: the profiler shows an unknown address, as before.
        }
    }

    /// <summary>The map's lines for the symbols: <c>0xSTART SIZE name</c>, lower-case hexadecimal, as the runtime writes its own.</summary>
    internal static string Format(IReadOnlyList<(IntPtr Start, int Size, string Name)> symbols)
    {
        StringBuilder text = new();
        foreach ((IntPtr start, int size, string name) in symbols)
        {
            text.Append(CultureInfo.InvariantCulture, $"0x{(ulong)start:x} {size:x} {name}\n");
        }

        return text.ToString();
    }

    /// <summary>The descriptor through which this process (the runtime) has <paramref name="path"/> open, if any.</summary>
    private static int? RuntimeDescriptor(string path)
    {
        string target = Path.GetFullPath(path);
        foreach (string link in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            if (int.TryParse(Path.GetFileName(link), NumberStyles.None, CultureInfo.InvariantCulture, out int descriptor) && LinkTarget(link) == target)
            {
                return descriptor;
            }
        }

        return null;
    }

    /// <summary>Where a /proc/self/fd entry points, or <see langword="null"/> when it is gone (the enumeration's own descriptor) or unreadable.</summary>
    private static string? LinkTarget(string link)
    {
        try
        {
            return File.ResolveLinkTarget(link, returnFinalTarget: false)?.FullName;
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static unsafe void WriteAll(int descriptor, ReadOnlySpan<byte> bytes)
    {
        fixed (byte* start = bytes)
        {
            for (int written = 0; written < bytes.Length;)
            {
                nint count = Write(descriptor, start + written, (nuint)(bytes.Length - written));
                if (count <= 0)
                {
                    throw new IOException("write(2) to the perf map failed.");
                }

                written += (int)count;
            }
        }
    }

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static unsafe partial nint Write(int descriptor, byte* buffer, nuint count);
}
