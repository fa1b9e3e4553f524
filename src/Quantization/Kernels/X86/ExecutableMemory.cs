using System.Runtime.InteropServices;

namespace Quantization;

/// <summary>
/// Pages of machine code made at run time (see <see cref="Avx512VnniKernel"/>): mapped writable, filled, then switched
/// to read and execute, never writable and executable at once. Linux only; the pages live as long as the process.
/// </summary>
internal static partial class ExecutableMemory
{
    private const int ProtRead = 1;
    private const int ProtWrite = 2;
    private const int ProtExec = 4;
    private const int MapPrivate = 2;
    private const int MapAnonymous = 0x20;

    /// <summary>Copies code into new executable pages.</summary>
    /// <param name="code">The machine code.</param>
    /// <returns>The address of the first byte, or <see cref="IntPtr.Zero"/> when this system refuses executable pages (a hardened kernel, a sandbox, not Linux).</returns>
    public static unsafe IntPtr TryCreate(ReadOnlySpan<byte> code)
    {
        if (!OperatingSystem.IsLinux() || code.IsEmpty)
        {
            return IntPtr.Zero;
        }

        try
        {
            nuint length = (nuint)code.Length;
            IntPtr pages = Mmap(IntPtr.Zero, length, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
            if (pages == new IntPtr(-1))
            {
                return IntPtr.Zero;
            }

            code.CopyTo(new Span<byte>((void*)pages, code.Length));
            if (Mprotect(pages, length, ProtRead | ProtExec) != 0)
            {
                _ = Munmap(pages, length);
                return IntPtr.Zero;
            }

            return pages;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException or MarshalDirectiveException)
        {
            // No usable libc (a musl or unusual system): no executable pages.
            return IntPtr.Zero;
        }
    }

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial IntPtr Mmap(IntPtr address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static partial int Mprotect(IntPtr address, nuint length, int protection);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int Munmap(IntPtr address, nuint length);
}
